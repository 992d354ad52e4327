"""ONNX Runtime: which wheel is installed, which execution providers, which session options.

Torch-free. ``onnxruntime`` is imported only inside :func:`create_session`, after
:func:`check_onnxruntime_install` has made sure exactly one ONNX Runtime wheel is present.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from newsmtl._errors import ModelError, ProviderUnavailableError
from newsmtl._settings import ModelSettings

__all__ = [
    "CPU",
    "CUDA",
    "TENSORRT",
    "check_active_providers",
    "check_onnxruntime_install",
    "create_session",
    "resolve_providers",
]

logger = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# Wheels that all install the same top-level ``onnxruntime`` package; two of them at once
# overwrite each other's files and leave a runtime whose providers depend on install order.
_ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
    "onnxruntime-training",
)


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def check_onnxruntime_install(distributions: Iterable[str] | None = None) -> str:
    """Return the one installed ONNX Runtime distribution name, or raise :class:`ModelError`.

    ``distributions`` defaults to every distribution importlib.metadata can see.
    """
    if distributions is None:
        distributions = (dist.metadata["Name"] or "" for dist in metadata.distributions())
    found = sorted({_canonical(name) for name in distributions} & set(_ORT_DISTRIBUTIONS))
    if not found:
        raise ModelError(
            "ONNX Runtime is not installed: install exactly one of 'newsmtl[serve]' (CPU) or 'newsmtl[gpu]' (CUDA)"
        )
    if len(found) > 1:
        raise ModelError(
            "several ONNX Runtime distributions are installed at once (%s); they ship the same "
            "'onnxruntime' package and overwrite each other. Uninstall all of them "
            "(pip uninstall -y %s) and install exactly one: 'newsmtl[serve]' for CPU or 'newsmtl[gpu]' for CUDA"
            % (", ".join(found), " ".join(found))
        )
    return found[0]


def resolve_providers(
    requested: str, available: Sequence[str], *, cuda_device_id: int = 0
) -> list[tuple[str, dict[str, Any]]]:
    """Execution providers (with options) to ask ONNX Runtime for, most preferred first.

    ``auto`` takes TensorRT, then CUDA, then the CPU, among the *available* providers. An
    explicit ``cuda`` or ``tensorrt`` that is not available raises
    :class:`~newsmtl.ProviderUnavailableError` instead of quietly running on the CPU. The CPU
    provider always comes last: ONNX Runtime places on it only the nodes a GPU provider has
    no kernel for.
    """
    device = {"device_id": str(cuda_device_id)}
    if requested == "cpu":
        return [(CPU, {})]
    if requested == "auto":
        chain: list[tuple[str, dict[str, Any]]] = []
        if TENSORRT in available:
            chain.append((TENSORRT, dict(device)))
        if CUDA in available:
            chain.append((CUDA, dict(device)))
        return [*chain, (CPU, {})]
    wanted = {"cuda": [CUDA], "tensorrt": [TENSORRT, CUDA]}.get(requested)
    if wanted is None:
        raise ProviderUnavailableError(
            "unknown execution provider setting %r (auto, cpu, cuda, tensorrt)" % requested
        )
    missing = [name for name in wanted if name not in available]
    if missing:
        raise ProviderUnavailableError(
            "execution provider %r was requested but %s is not available in this ONNX Runtime "
            "(available: %s); install 'newsmtl[gpu]' (onnxruntime-gpu) with a matching CUDA/TensorRT, "
            "or set NEWSMTL_MODEL__PROVIDERS=cpu or auto"
            % (requested, " and ".join(missing), ", ".join(available) or "none")
        )
    return [*((name, dict(device)) for name in wanted), (CPU, {})]


def check_active_providers(requested: str, asked: Sequence[str], active: Sequence[str]) -> None:
    """Raise if an explicitly requested GPU provider is not among the session's active ones.

    ONNX Runtime drops a provider whose libraries fail to load with only a log line; for
    ``cuda``/``tensorrt`` that must be an error, never a silent run on the CPU.
    """
    if requested not in ("cuda", "tensorrt"):
        return
    lost = [name for name in asked if name != CPU and name not in active]
    if lost:
        raise ProviderUnavailableError(
            "execution provider %r was requested but ONNX Runtime did not load %s (session has: %s); "
            "check the CUDA/cuDNN/TensorRT libraries and the GPU driver"
            % (requested, " and ".join(lost), ", ".join(active) or "none")
        )


_OPTIMIZATION = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def create_session(model_path: Path, settings: ModelSettings) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model_path`` configured from ``settings``.

    After creation the session's own provider list is checked: ONNX Runtime may drop a
    provider whose libraries fail to load (with only a log line), and an explicitly requested
    GPU provider must then be an error, not a silent CPU run.
    """
    check_onnxruntime_install()
    import onnxruntime as ort

    chain = resolve_providers(
        settings.providers, ort.get_available_providers(), cuda_device_id=settings.cuda_device_id
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, _OPTIMIZATION[settings.graph_optimization]
    )
    names = [name for name, _ in chain]
    try:
        session = ort.InferenceSession(
            str(model_path),
            sess_options=options,
            providers=names,
            provider_options=[opts for _, opts in chain],
        )
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unrelated types
        if settings.providers in ("cuda", "tensorrt"):
            raise ProviderUnavailableError(
                "could not create an ONNX Runtime session with %s: %s" % (", ".join(names), exc)
            ) from exc
        raise ModelError("could not load %s into ONNX Runtime: %s" % (model_path, exc)) from exc
    active = list(session.get_providers())
    check_active_providers(settings.providers, names, active)
    logger.info("onnxruntime session for %s on %s", model_path.name, ", ".join(active))
    return session
