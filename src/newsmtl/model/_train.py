"""Training loop: AdamW + warmup/decay, early stopping on dev topic macro-F1, resumable.

Reproducibility: every random choice is seeded from ``TrainConfig.seed`` (subset, split, batch
order = ``default_rng([seed, epoch])``, weight init and dropout = torch's generator, whose state
is saved in ``last.pt``), so the same seed on the same machine and thread count gives the same
dev metrics on CPU. Resuming restarts at the last finished epoch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from newsmtl._errors import ConfigError, DataError, ModelError
from newsmtl.model._cache import TokenCache
from newsmtl.model._config import TrainConfig
from newsmtl.model._evaluate import dev_metrics
from newsmtl.model._losses import LossWeights, dann_schedule, multitask_loss
from newsmtl.model._network import ModelConfig, SharedPrivateNet
from newsmtl.model._pipeline import (
    batch_tensors,
    encode_examples,
    encode_ids,
    iter_batches,
    prepare_data,
    run_forward,
)
from newsmtl.model._pretrain import pretrain_token_vectors, scale_like_init
from newsmtl.model._run import (
    CHECKPOINT,
    CONFIG_JSON,
    LAST,
    METRICS_JSON,
    RUN_FORMAT,
    TOKENIZER_JSON,
    atomic_write_json,
    now_iso,
    read_checkpoint,
    save_torch_atomic,
)
from newsmtl.text import OutletMasker, TextEncoder, default_text_config

__all__ = ["NullReporter", "TrainReporter", "TrainResult", "resolve_device", "set_threads", "train"]

logger = logging.getLogger(__name__)
LAST_FORMAT = "newsmtl-resume/1"
PRIMARY_METRIC = "topic.macro_f1"


class TrainReporter(Protocol):
    """Progress callbacks; the CLI renders them as a rich progress bar."""

    def on_start(self, *, total_steps: int, done_steps: int, info: dict[str, Any]) -> None: ...
    def on_step(self, *, step: int, epoch: int, losses: dict[str, float], lr: float) -> None: ...
    def on_epoch(self, *, epoch: int, metrics: dict[str, Any], improved: bool, seconds: float) -> None: ...
    def on_end(self, *, stopped_early: bool) -> None: ...


class NullReporter:
    """Logs epoch summaries only (used when there is no terminal)."""

    def on_start(self, *, total_steps: int, done_steps: int, info: dict[str, Any]) -> None:
        logger.info("training %d steps (%d done): %s", total_steps, done_steps, info)

    def on_step(self, *, step: int, epoch: int, losses: dict[str, float], lr: float) -> None:
        return None

    def on_epoch(self, *, epoch: int, metrics: dict[str, Any], improved: bool, seconds: float) -> None:
        logger.info(
            "epoch %d (%.0fs): dev topic macro-F1 %.4f acc %.4f style top1 %s%s",
            epoch, seconds, metrics["topic.macro_f1"], metrics["topic.accuracy"],
            "%.4f" % metrics["style.top1"] if metrics.get("style.top1") is not None else "-",
            " (best)" if improved else "",
        )

    def on_end(self, *, stopped_early: bool) -> None:
        return None


@dataclass
class TrainResult:
    run_dir: Path
    dev_metrics: dict[str, Any]
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    train_seconds: float


def auto_threads() -> int:
    """CPUs this process may use minus the machine's current load (1-minute average), >= 1.

    Torch's OpenMP workers spin while they wait; on an oversubscribed machine two spinning
    threads on two busy cores ran a small CNN 10x slower than one thread did, so a loaded
    machine gets fewer threads. Pass ``threads`` explicitly for bit-identical reruns (the float
    summation order, hence the last digits, can depend on the thread count).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:  # pragma: no cover - no load average
        busy = 0
    return max(1, min(cpus, cpus - busy + 1))


def set_threads(cfg: TrainConfig) -> int:
    n = cfg.threads if cfg.threads > 0 else auto_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device %s requested but CUDA is not available" % name)
    return device


def build_model_config(cfg: TrainConfig, *, vocab_size: int, pad_id: int, num_topics: int, num_publications: int,
                       num_bias: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab_size, num_topics=num_topics, num_publications=num_publications, num_bias=num_bias,
        pad_id=pad_id, max_length=cfg.max_length, embed_dim=cfg.embed_dim, shared_dim=cfg.shared_dim,
        shared_kernel_sizes=tuple(cfg.shared_kernel_sizes), private_dim=cfg.private_dim,
        private_kernel_size=cfg.private_kernel_size, discriminator_hidden=cfg.discriminator_hidden,
        dropout=cfg.dropout, use_private=cfg.use_private,
        per_publication_topic_heads=cfg.per_publication_topic_heads, residual_topic_heads=cfg.residual_topic_heads,
        pooling=cfg.pooling, bag_of_words=cfg.bag_of_words, bigram_buckets=cfg.bigram_buckets,
        bigram_dim=cfg.bigram_dim, private_embedding_grad_scale=cfg.private_embedding_grad_scale,
    )


def _lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warmup = max(1, int(round(cfg.warmup_fraction * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if cfg.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _param_groups(
    net: nn.Module, weight_decay: float, *, lr: float, embedding_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    embedding: list[nn.Parameter] = []
    for name, param in net.named_parameters():
        if name == "embedding.weight" and embedding_lr_scale != 1.0:
            embedding.append(param)
            continue
        # Matrices and conv kernels decay; biases (and the per-outlet bias tables) do not.
        (no_decay if param.ndim < 2 or name.endswith("bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if embedding:
        # A third group only when it differs, so that older resume states still load.
        groups.append({"params": embedding, "weight_decay": weight_decay, "lr": lr * embedding_lr_scale})
    return groups


def _masker_config(cfg: TrainConfig) -> dict[str, Any] | None:
    if not cfg.mask_outlets:
        return None
    return OutletMasker.from_config(cfg.masking).to_dict()


def train(
    data_path: Path, out_dir: Path, cfg: TrainConfig, *, resume: bool = False, reporter: TrainReporter | None = None,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train into ``out_dir`` (see docs/CONTRACTS.md for the files written).

    ``cache_dir`` keeps the trained tokenizer and the token ids of the split (see
    :mod:`newsmtl.model._cache`) for later runs on the same data, seed and text config.
    """
    reporter = reporter or NullReporter()
    out_dir = Path(out_dir)
    last_path = out_dir / LAST
    state: dict[str, Any] | None = None
    if resume:
        if not last_path.is_file():
            raise ConfigError("--resume: %s has no %s to resume from" % (out_dir, LAST))
        state = read_checkpoint(last_path)
        if state.get("format") != LAST_FORMAT:
            raise ModelError("%s: unknown resume format %r" % (last_path, state.get("format")))
        stored = TrainConfig.from_stored(state["train_config"])
        if stored.to_dict() != cfg.to_dict():
            logger.info("resuming with the run's stored config (preset %s), not the one given", stored.preset)
        cfg = stored
    elif (out_dir / CHECKPOINT).exists() or last_path.exists():
        raise ConfigError("%s already holds a run; pass --resume to continue it or choose another --out" % out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    threads = set_threads(cfg)
    device = resolve_device(cfg.device)
    use_amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False

    t0, c0 = time.perf_counter(), time.process_time()
    data = prepare_data(data_path, cfg)
    t_data = time.perf_counter()
    if state is not None and state["data"]["train_fingerprint"] != data.info["train_fingerprint"]:
        raise DataError("%s is not the data this run was trained on (the training split differs)" % data_path)
    ex = data.examples

    tok_path = out_dir / TOKENIZER_JSON
    text_config = default_text_config(
        max_length=cfg.max_length, title_max_tokens=cfg.title_max_tokens, masking=_masker_config(cfg)
    )
    if not cfg.mask_outlets:
        text_config["masking"] = None
    cache = (
        TokenCache(cache_dir, train_fingerprint=data.info["train_fingerprint"],
                   dev_fingerprint=data.info["dev_fingerprint"], text_config=text_config, vocab_size=cfg.vocab_size)
        if cache_dir is not None else None
    )
    train_ex = [ex[i] for i in data.split.train]
    dev_ex = [ex[i] for i in data.split.dev]
    if state is not None:
        encoder = TextEncoder.load(tok_path, state["text_config"])
    else:
        cached = cache.load_encoder(text_config) if cache is not None else None
        if cached is not None:
            encoder = cached
        else:
            encoder = TextEncoder.train(
                [e.title for e in train_ex], [e.text for e in train_ex], vocab_size=cfg.vocab_size, config=text_config
            )
            if cache is not None:
                cache.save_encoder(encoder)
        encoder.save(tok_path)
    t_tok = time.perf_counter()
    labels = {"topics": data.topics, "publications": data.publications, "bias": data.bias}
    enc_args: dict[str, Any] = {"topics": data.topics, "publications": data.publications, "bias": data.bias}
    token_ids = {}
    for name, part in (("train", train_ex), ("dev", dev_ex)):
        ids = cache.load_ids(encoder, name, len(part)) if cache is not None else None
        if ids is None:
            ids = encode_ids(encoder, part)
            if cache is not None:
                cache.save_ids(encoder, name, ids)
        token_ids[name] = ids
    train_set = encode_examples(encoder, train_ex, token_ids=token_ids["train"], **enc_args)
    dev_set = encode_examples(encoder, dev_ex, token_ids=token_ids["dev"], **enc_args)
    dev_publications = [ex[i].publication for i in data.split.dev]
    t_enc = time.perf_counter()
    logger.info(
        "data ready in %.1fs (loading %.1fs, tokenizer %.1fs, encoding %.1fs): %s train / %s dev, %d topics, "
        "%d modelled outlets, %d threads, device %s",
        t_enc - t0, t_data - t0, t_tok - t_data, t_enc - t_tok, len(train_set), len(dev_set), len(data.topics),
        len(data.publications), threads, device,
    )

    run_info: dict[str, Any] = {
        **data.info,
        "threads": threads,
        "device": str(device),
        "amp": use_amp,
    }
    if state is not None and "pretraining" in state["data"]:
        run_info["pretraining"] = state["data"]["pretraining"]
    model_config = build_model_config(
        cfg, vocab_size=encoder.vocab_size, pad_id=encoder.pad_id, num_topics=len(data.topics),
        num_publications=len(data.publications), num_bias=len(data.bias),
    )
    net = SharedPrivateNet(model_config)
    if cfg.pretrain_embeddings and state is None:
        run_info["pretraining"] = _init_pretrained_embeddings(net, cfg, encoder, train_ex, cache)
    net = net.to(device)
    optimizer = torch.optim.AdamW(
        _param_groups(net, cfg.weight_decay, lr=cfg.lr, embedding_lr_scale=cfg.embedding_lr_scale), lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    weights = LossWeights(
        topic=cfg.loss_topic, shared_topic=cfg.loss_shared_topic, style=cfg.loss_style,
        bias=cfg.loss_bias if data.bias else 0.0, adversarial=cfg.loss_adversarial, difference=cfg.loss_difference,
    )

    class_weights: torch.Tensor | None = None
    if cfg.topic_class_weighting != "none":
        counts = np.bincount(train_set.topic[train_set.topic >= 0], minlength=len(data.topics)).astype(np.float64)
        w = counts.max() / np.maximum(counts, 1.0)
        if cfg.topic_class_weighting == "sqrt_inverse":
            w = np.sqrt(w)
        class_weights = torch.tensor(w / w.mean(), dtype=torch.float32, device=device)

    start_epoch, global_step, best, bad_epochs, best_epoch = 0, 0, -1.0, 0, 0
    history: list[dict[str, Any]] = []
    prior_seconds = prior_total = prior_cpu = 0.0
    best_metrics: dict[str, Any] = {}
    stopped_early = False
    if state is not None:
        net.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, global_step = int(state["epoch"]), int(state["global_step"])
        best, bad_epochs, best_epoch = float(state["best"]), int(state["bad_epochs"]), int(state["best_epoch"])
        history = list(state["history"])
        prior_seconds = float(state["train_seconds"])
        prior_total = float(state.get("total_seconds", prior_seconds))
        prior_cpu = float(state.get("cpu_seconds", 0.0))
        best_metrics = dict(state["best_metrics"])
        stopped_early = bool(state["stopped_early"])

    reporter.on_start(
        total_steps=total_steps, done_steps=global_step,
        info={"train": len(train_set), "dev": len(dev_set), "outlets": len(data.publications),
              "topics": len(data.topics), "device": str(device), "threads": threads},
    )
    t_train = time.perf_counter()
    epoch = start_epoch
    net.train()
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        if stopped_early:
            break
        t_epoch = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        for rows in iter_batches(len(train_set), cfg.batch_size, rng=rng):
            b = batch_tensors(train_set, rows, device)
            net.grl.strength = cfg.adversarial_max_strength * dann_schedule(
                global_step / max(1, total_steps), gamma=cfg.adversarial_gamma
            )
            autocast = (
                torch.autocast(device_type="cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
            )
            with autocast:
                out = net(b["input_ids"], b["attention_mask"], b["publication_index"])
                losses = multitask_loss(
                    out, topic=b["topic"], publication_index=b["publication_index"],
                    bias=b["bias"] if data.bias else None, weights=weights,
                    num_publications=len(data.publications), use_private=cfg.use_private,
                    topic_class_weights=class_weights,
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses.total).backward()  # type: ignore[no-untyped-call]
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            global_step += 1
            reporter.on_step(step=global_step, epoch=epoch, losses=losses.terms, lr=float(scheduler.get_last_lr()[0]))

        outputs = run_forward(net, dev_set, batch_size=cfg.eval_batch_size, device=device)
        metrics = dev_metrics(
            outputs, dev_set, publications=dev_publications, modelled=data.publications,
            trains_style=cfg.trains_style, has_bias=bool(data.bias),
        )
        seconds = time.perf_counter() - t_epoch
        improved = metrics[PRIMARY_METRIC] > best
        history.append({"epoch": epoch, "seconds": round(seconds, 1), **metrics})
        elapsed = prior_seconds + time.perf_counter() - t_train
        timing = {
            "train_seconds": round(elapsed, 1),
            "total_seconds": round(prior_total + time.perf_counter() - t0, 1),
            "cpu_seconds": round(prior_cpu + time.process_time() - c0, 1),
        }
        if improved:
            best, best_epoch, bad_epochs, best_metrics = metrics[PRIMARY_METRIC], epoch, 0, metrics
            ckpt = {
                "format": RUN_FORMAT,
                "model_config": model_config.to_dict(),
                "train_config": cfg.to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "labels": labels,
                "text_config": encoder.config,
                "tokenizer_json": encoder.tokenizer.to_str(),
                "metrics": {"dev": metrics},
                "data": run_info,
                "epoch": epoch,
                "created_at": now_iso(),
            }
            save_torch_atomic(ckpt, out_dir / CHECKPOINT)
        else:
            bad_epochs += 1
            stopped_early = bad_epochs >= cfg.patience and epoch < cfg.epochs
        save_torch_atomic(
            {
                "format": LAST_FORMAT,
                "train_config": cfg.to_dict(),
                "text_config": encoder.config,
                "data": run_info,
                "state_dict": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch,
                "global_step": global_step,
                "best": best,
                "best_epoch": best_epoch,
                "best_metrics": best_metrics,
                "bad_epochs": bad_epochs,
                "history": history,
                **timing,
                "train_seconds": elapsed,
                "stopped_early": stopped_early,
            },
            last_path,
        )
        _write_sidecars(out_dir, cfg, model_config, labels, encoder, best_metrics, history, best_epoch, timing,
                        stopped_early, run_info)
        reporter.on_epoch(epoch=epoch, metrics=metrics, improved=improved, seconds=seconds)

    train_seconds = prior_seconds + time.perf_counter() - t_train
    timing = {
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(prior_total + time.perf_counter() - t0, 1),
        "cpu_seconds": round(prior_cpu + time.process_time() - c0, 1),
    }
    if not (out_dir / CHECKPOINT).is_file():
        raise ModelError("training produced no checkpoint in %s" % out_dir)
    _write_sidecars(out_dir, cfg, model_config, labels, encoder, best_metrics, history, best_epoch, timing,
                    stopped_early, run_info)
    reporter.on_end(stopped_early=stopped_early)
    return TrainResult(
        run_dir=out_dir, dev_metrics=best_metrics, epochs_run=len(history), best_epoch=best_epoch,
        stopped_early=stopped_early, train_seconds=train_seconds,
    )


def _init_pretrained_embeddings(
    net: SharedPrivateNet, cfg: TrainConfig, encoder: TextEncoder, train_ex: list[Any], cache: TokenCache | None,
) -> dict[str, Any]:
    """Overwrite the token embeddings with skip-gram vectors of the full training articles."""
    params = {"dim": cfg.embed_dim, "epochs": cfg.pretrain_epochs, "window": cfg.pretrain_window, "seed": cfg.seed}
    pretrained = cache.load_vectors(encoder, params) if cache is not None else None
    if pretrained is None:
        # One worker: gensim is reproducible only single-threaded.
        pretrained = pretrain_token_vectors(
            encoder, [e.title for e in train_ex], [e.text for e in train_ex], workers=1, **params
        )
        if cache is not None:
            cache.save_vectors(encoder, params, pretrained)
    with torch.no_grad():
        init = net.embedding.weight.detach().numpy()
        table = scale_like_init(pretrained, init)
        table[encoder.pad_id] = 0.0
        net.embedding.weight.copy_(torch.from_numpy(table))
    return {"method": "skip-gram", **params, "tokens": pretrained.tokens, "ids_seen": int(pretrained.seen.sum()),
            "seconds": round(pretrained.seconds, 1)}


def _write_sidecars(
    out_dir: Path, cfg: TrainConfig, model_config: ModelConfig, labels: dict[str, list[str]], encoder: TextEncoder,
    best_metrics: dict[str, Any], history: list[dict[str, Any]], best_epoch: int, timing: dict[str, float],
    stopped_early: bool, run_info: dict[str, Any],
) -> None:
    atomic_write_json(
        out_dir / CONFIG_JSON,
        {"format": RUN_FORMAT, "model_config": model_config.to_dict(), "train_config": cfg.to_dict(),
         "labels": labels, "text_config": encoder.config, "data": run_info},
    )
    metrics_path = out_dir / METRICS_JSON
    existing: dict[str, Any] = {}
    if metrics_path.is_file():
        import json

        try:
            existing = json.loads(metrics_path.read_text(encoding="utf-8"))
        except ValueError:
            existing = {}
    existing.update(
        {"dev": best_metrics, "best_epoch": best_epoch, "history": history, **timing, "stopped_early": stopped_early}
    )
    atomic_write_json(metrics_path, existing)
