"""Model bundles: ``newsmtl export`` (torch) and the bundle format reader (torch-free).

Importing this package is torch-free: the bundle reader is imported eagerly, the exporter
(which needs torch, onnx and onnxruntime) only when one of its names is first used::

    from newsmtl.export import read_bundle          # torch-free
    from newsmtl.export import export_run           # imports torch
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from newsmtl.export._bundle import (
    BUNDLE_FORMAT_VERSION,
    CARD_FILE,
    INPUT_NAMES,
    MANIFEST_FILE,
    MODEL_FILE,
    OUTPUT_NAMES,
    TOKENIZER_FILE,
    Bundle,
    BundleLabels,
    BundleManifest,
    VariantReport,
    build_inputs,
    read_bundle,
    sha256_file,
)

if TYPE_CHECKING:
    from newsmtl.export._exporter import ExportOptions, ExportResult, export_run

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
    "ExportOptions",
    "ExportResult",
    "VariantReport",
    "build_inputs",
    "export_run",
    "read_bundle",
    "sha256_file",
]

_LAZY = {"ExportOptions": "_exporter", "ExportResult": "_exporter", "export_run": "_exporter"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    value = getattr(importlib.import_module("%s.%s" % (__name__, module)), name)
    globals()[name] = value
    return value
