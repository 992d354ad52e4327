"""The model bundle format: file names, tensor names, manifest, checksums. Torch-free.

A bundle is a directory written by ``newsmtl export`` and read by
:class:`newsmtl.consumer.Predictor`::

    BUNDLE/model.onnx      the chosen variant (fp32, fp16 or int8; manifest["variant"] says which)
    BUNDLE/tokenizer.json  the run's trained tokenizer
    BUNDLE/manifest.json   format_version, names, labels, text config, metrics, parity, files
    BUNDLE/MODEL_CARD.md   data, intended use, limits, per-publication accuracy

``manifest["files"]`` maps every other file of the bundle to its sha256; :func:`read_bundle`
refuses a bundle whose files are missing or differ, or whose ``format_version`` it does not know.
This module (and everything it imports) must never import torch: the serving image has none.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from newsmtl._errors import BundleError

__all__ = [
    "BUNDLE_FORMAT_VERSION",
    "CARD_FILE",
    "INPUT_NAMES",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "OUTPUT_NAMES",
    "TOKENIZER_FILE",
    "Bundle",
    "BundleLabels",
    "BundleManifest",
    "VariantReport",
    "build_inputs",
    "read_bundle",
    "sha256_file",
    "write_manifest",
]

BUNDLE_FORMAT_VERSION = 1

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "MODEL_CARD.md"
_REQUIRED_FILES = (MODEL_FILE, TOKENIZER_FILE)

INPUT_NAMES = ("input_ids", "attention_mask", "publication_index")
# In graph order; bias_probs exists only when the run trained a bias head.
OUTPUT_NAMES = (
    "topic_probs",
    "style_scores",
    "shared_share",
    "shared_contribution",
    "private_contribution",
    "bias_probs",
)

Variant = Literal["fp32", "fp16", "int8"]

_MANIFEST_CONFIG = ConfigDict(frozen=True, extra="ignore", protected_namespaces=())


class BundleLabels(BaseModel):
    """Label lists in model output order."""

    model_config = _MANIFEST_CONFIG

    topics: list[str] = Field(min_length=2)
    publications: list[str] = Field(min_length=1)
    bias: list[str] = Field(default_factory=list)


class VariantReport(BaseModel):
    """Verification figures of one exported variant, measured at export time."""

    model_config = _MANIFEST_CONFIG

    file: str | None = Field(description="File in the bundle holding this variant, or None if not shipped.")
    method: str = Field(description="How the variant was made, e.g. 'torch.onnx.export', 'quantize_static'.")
    size_bytes: int
    parity: dict[str, Any] = Field(description="ORT vs torch on the parity articles, per batch size.")
    accuracy: dict[str, Any] = Field(
        description="Dev-split topic accuracy / macro-F1 and their delta to fp32."
    )
    passed: bool
    notes: list[str] = Field(default_factory=list)


class BundleManifest(BaseModel):
    """``manifest.json``; see docs/CONTRACTS.md."""

    model_config = _MANIFEST_CONFIG

    format_version: int
    model_name: str = Field(min_length=1)
    model_version: str = Field(min_length=1)
    created_at: datetime
    labels: BundleLabels
    text_config: dict[str, Any]
    max_length: int = Field(ge=1)
    pad_id: int = Field(ge=0)
    opset: int = Field(ge=17)
    inputs: list[str]
    outputs: list[str]
    variant: Variant = Field(description="The variant stored as model.onnx.")
    variants: dict[str, VariantReport]
    metrics: dict[str, Any] = Field(description="The run's training/dev metrics, verbatim.")
    parity: dict[str, Any] = Field(
        description="Parity figures of the chosen variant (= variants[variant].parity)."
    )
    source: dict[str, Any] = Field(default_factory=dict, description="Run directory, checkpoint hash, data.")
    files: dict[str, str] = Field(description="File name -> sha256 hex digest, for every file but this one.")


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk: every path here has passed its checksum."""

    root: Path
    manifest: BundleManifest

    @property
    def model_path(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.root / TOKENIZER_FILE


def sha256_file(path: Path, *, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _json_safe(value: Any) -> Any:
    # NaN/inf are not JSON: a figure that could not be computed is written as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> BundleManifest:
    """Validate ``manifest`` against the format, then write it as ``root/manifest.json``."""
    manifest = _json_safe(manifest)
    try:
        parsed = BundleManifest.model_validate(manifest)
    except ValidationError as exc:
        raise BundleError("refusing to write an invalid manifest: %s" % exc) from None
    text = json.dumps(manifest, indent=2, sort_keys=False, default=str, allow_nan=False)
    (root / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
    return parsed


def read_bundle(root: Path, *, verify_checksums: bool = True) -> Bundle:
    """Read and check a bundle directory.

    Raises :class:`~newsmtl.BundleError` naming the problem when the directory or a required
    file is missing, the format version is unknown, the manifest is malformed, or a file's
    sha256 differs from the manifest.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError("model bundle %s does not exist or is not a directory" % root)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError("model bundle %s has no %s" % (root, MANIFEST_FILE))
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError("%s is not valid JSON: %s" % (manifest_path, exc)) from None
    if not isinstance(raw, dict):
        raise BundleError("%s must hold a JSON object" % manifest_path)
    # The version is checked before anything else: a newer format may have renamed any field.
    version = raw.get("format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            "model bundle %s has format_version %r, but this newsmtl reads only format_version %d; "
            "re-export the run with this version's `newsmtl export` or upgrade newsmtl"
            % (root, version, BUNDLE_FORMAT_VERSION)
        )
    try:
        manifest = BundleManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            "%s: %s" % (".".join(str(p) for p in err["loc"]), err["msg"])
            for err in exc.errors(include_url=False)
        )
        raise BundleError("%s is malformed: %s" % (manifest_path, problems)) from None

    for name in _REQUIRED_FILES:
        if name not in manifest.files:
            raise BundleError("%s lists no checksum for the required file %s" % (manifest_path, name))
    for name, expected in sorted(manifest.files.items()):
        path = root / name
        # Names come from a file we did not necessarily write: never follow one out of the bundle.
        if Path(name).name != name or name in {".", ".."}:
            raise BundleError("%s lists an invalid file name %r" % (manifest_path, name))
        if not path.is_file():
            raise BundleError("model bundle %s is missing %s (listed in its manifest)" % (root, name))
        if verify_checksums:
            actual = sha256_file(path)
            if actual != expected.lower():
                raise BundleError(
                    "checksum mismatch for %s in bundle %s: manifest says sha256 %s, file has %s; "
                    "the bundle is corrupt or was modified after export" % (name, root, expected, actual)
                )
    return Bundle(root=root, manifest=manifest)


def build_inputs(
    token_ids: Sequence[Sequence[int]], publication_index: Sequence[int], *, pad_id: int
) -> dict[str, np.ndarray]:
    """Right-pad token id lists into the model's input tensors.

    Returns ``input_ids`` [B,T] int64, ``attention_mask`` [B,T] int64 and
    ``publication_index`` [B] int64, with T = the longest list (at least 1: an empty list
    becomes one masked pad token, which the masked max-pool turns into all-zero features).
    """
    batch = len(token_ids)
    if batch != len(publication_index):
        raise ValueError("token_ids and publication_index differ in length")
    width = max((len(ids) for ids in token_ids), default=1) or 1
    input_ids = np.full((batch, width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((batch, width), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "publication_index": np.asarray(publication_index, dtype=np.int64).reshape(batch),
    }
