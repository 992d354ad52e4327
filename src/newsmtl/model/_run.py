"""The run directory (see docs/CONTRACTS.md) and :func:`load_run`."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from newsmtl._errors import ModelError
from newsmtl.model._config import TrainConfig
from newsmtl.model._network import ModelConfig, SharedPrivateNet
from newsmtl.text import TextEncoder

__all__ = [
    "CHECKPOINT",
    "CONFIG_JSON",
    "LAST",
    "METRICS_JSON",
    "RUN_FORMAT",
    "TOKENIZER_JSON",
    "Run",
    "atomic_write_json",
    "load_run",
    "read_checkpoint",
    "save_torch_atomic",
]

RUN_FORMAT = "newsmtl-run/1"
CHECKPOINT = "checkpoint.pt"
LAST = "last.pt"
TOKENIZER_JSON = "tokenizer.json"
CONFIG_JSON = "config.json"
METRICS_JSON = "metrics.json"


@dataclass
class Run:
    """A trained run, ready for inference: ``net`` is in eval mode on the CPU."""

    run_dir: Path
    net: SharedPrivateNet
    encoder: TextEncoder
    labels: dict[str, list[str]]
    metrics: dict[str, Any]
    train_config: dict[str, Any]
    model_config: ModelConfig
    data: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_stored(self.train_config)


def save_torch_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temp file + rename, so a crash never leaves half a checkpoint."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a run dir is shared with export/serving
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelError("no checkpoint at %s" % path)
    try:
        # weights_only: a checkpoint is plain tensors, dicts, lists, strings and numbers.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many unrelated types for a bad file
        raise ModelError("cannot read checkpoint %s: %s" % (path, exc)) from None
    if not isinstance(ckpt, dict):
        raise ModelError("%s is not a newsmtl checkpoint" % path)
    return ckpt


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def load_run(run_dir: Path | str) -> Run:
    """Load ``RUN_DIR/checkpoint.pt`` (+ ``tokenizer.json``) into a CPU model in eval mode."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelError("run directory not found: %s" % run_dir)
    ckpt = read_checkpoint(run_dir / CHECKPOINT)
    if ckpt.get("format") != RUN_FORMAT:
        raise ModelError("%s: unknown checkpoint format %r (expected %r)" % (run_dir, ckpt.get("format"), RUN_FORMAT))
    try:
        model_config = ModelConfig.from_dict(ckpt["model_config"])
        net = SharedPrivateNet(model_config)
        net.load_state_dict(ckpt["state_dict"])
        tok_path = run_dir / TOKENIZER_JSON
        if tok_path.is_file():
            encoder = TextEncoder.load(tok_path, ckpt["text_config"])
        else:  # the checkpoint embeds the tokenizer too, so it is self-describing on its own
            from tokenizers import Tokenizer

            encoder = TextEncoder(Tokenizer.from_str(ckpt["tokenizer_json"]), ckpt["text_config"])
        labels = {k: list(v) for k, v in ckpt["labels"].items()}
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelError("%s: corrupt or incompatible checkpoint: %s" % (run_dir, exc)) from None
    if encoder.vocab_size > model_config.vocab_size:
        raise ModelError("%s: tokenizer vocabulary larger than the model's embedding" % run_dir)
    net.eval()
    return Run(
        run_dir=run_dir,
        net=net,
        encoder=encoder,
        labels=labels,
        metrics=dict(ckpt.get("metrics", {})),
        train_config=dict(ckpt["train_config"]),
        model_config=model_config,
        data=dict(ckpt.get("data", {})),
        created_at=ckpt.get("created_at"),
    )
