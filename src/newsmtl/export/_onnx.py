"""Trace :class:`~newsmtl.model.SharedPrivateNet` into an ONNX graph and make its variants.

fp32 comes straight from ``torch.onnx.export``; fp16 is a graph rewrite of the fp32 file
(ONNX Runtime's float16 converter, inputs and outputs kept int64/float32 so callers never see
half floats); int8 is ONNX Runtime quantization of the fp32 file.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch

from newsmtl._errors import ExportError
from newsmtl.export._bundle import INPUT_NAMES, OUTPUT_NAMES
from newsmtl.model._network import OnnxInferenceWrapper, SharedPrivateNet

__all__ = [
    "DEFAULT_OPSET",
    "Exporter",
    "Int8Method",
    "check_onnx",
    "export_fp32",
    "make_fp16",
    "make_int8",
    "output_names",
]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
Exporter = Literal["torchscript", "dynamo"]
Int8Method = Literal["static", "dynamic"]


def output_names(net: SharedPrivateNet) -> list[str]:
    names = list(OUTPUT_NAMES)
    if net.bias_head is None:
        names.remove("bias_probs")
    return names


def _example_inputs(net: SharedPrivateNet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Batch 3 / length 11 (not 1): a size-1 example could be specialised into the graph. One known
    # and one unknown outlet so both branches of every torch.where are traced.
    cfg = net.cfg
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, cfg.vocab_size, (3, 11), generator=gen, dtype=torch.int64)
    attention_mask = torch.ones(3, 11, dtype=torch.int64)
    attention_mask[2, 7:] = 0
    publication_index = torch.tensor([0, -1, cfg.num_publications - 1], dtype=torch.int64)
    return input_ids, attention_mask, publication_index


def export_fp32(
    net: SharedPrivateNet, path: Path, *, opset: int = DEFAULT_OPSET, exporter: Exporter = "torchscript"
) -> None:
    """Write ``net`` (in eval mode) as an fp32 ONNX graph with dynamic batch and sequence axes.

    ``torchscript`` (the legacy tracer) gives a compact graph with ``dynamic_axes`` in under a
    second; ``dynamo`` (``torch.export``) is kept as the way forward should the tracer go away.
    """
    if opset < 17:
        raise ExportError("opset %d is too old: the bundle format needs opset >= 17" % opset)
    wrapper = OnnxInferenceWrapper(net).eval()
    was_training = net.training
    net.eval()
    outputs = output_names(net)
    example = _example_inputs(net)
    try:
        # The exporters warn about their own deprecations and about how they lower advanced
        # indexing; neither is actionable here, so they go to the debug log instead of stderr.
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            if exporter == "torchscript":
                axes: dict[str, dict[int, str]] = {
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "publication_index": {0: "batch"},
                }
                axes.update({name: {0: "batch"} for name in outputs})
                torch.onnx.export(
                    wrapper,
                    example,
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=list(INPUT_NAMES),
                    output_names=outputs,
                    dynamic_axes=axes,
                    do_constant_folding=True,
                )
            else:
                batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
                program = torch.onnx.export(
                    wrapper,
                    example,
                    dynamo=True,
                    opset_version=opset,
                    input_names=list(INPUT_NAMES),
                    output_names=outputs,
                    dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}, {0: batch}),
                    optimize=True,
                    verbose=False,
                )
                if program is None:  # pragma: no cover - torch returns the program with dynamo=True
                    raise ExportError("torch.onnx.export(dynamo=True) returned no program")
                program.save(str(path))
        for item in caught:
            logger.debug("torch.onnx.export: %s: %s", item.category.__name__, item.message)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - any tracer failure becomes an ExportError with its cause
        raise ExportError(
            "torch.onnx.export (%s) failed: %s: %s" % (exporter, type(exc).__name__, exc)
        ) from exc
    finally:
        net.train(was_training)
    check_onnx(path, expected_outputs=outputs, min_opset=opset)


def check_onnx(
    path: Path, *, expected_outputs: Iterable[str], min_opset: int = DEFAULT_OPSET
) -> onnx.ModelProto:
    """``onnx.checker`` (full check, with shape inference) plus the bundle's I/O contract."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types
        raise ExportError("onnx.checker rejected %s: %s" % (path.name, exc)) from exc
    model = onnx.load(str(path), load_external_data=False)
    inputs = [value.name for value in model.graph.input]
    outputs = [value.name for value in model.graph.output]
    if inputs != list(INPUT_NAMES):
        raise ExportError("%s has inputs %s, expected %s" % (path.name, inputs, list(INPUT_NAMES)))
    if outputs != list(expected_outputs):
        raise ExportError("%s has outputs %s, expected %s" % (path.name, outputs, list(expected_outputs)))
    opset = max((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), default=0)
    if opset < min_opset:
        raise ExportError("%s uses opset %d, expected >= %d" % (path.name, opset, min_opset))
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if any(dim.HasField("dim_value") for dim in dims):
            raise ExportError(
                "%s: input %s has a fixed dimension; batch and sequence must be dynamic"
                % (path.name, value.name)
            )
    return model


def make_fp16(src: Path, dst: Path, *, expected_outputs: Iterable[str]) -> None:
    """fp16 weights and activations, fp32/int64 graph inputs and outputs.

    Made from the fp32 graph rather than by tracing a ``.half()`` model: torch's CPU half
    kernels are slow or missing, and the converter leaves the I/O types alone.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    try:
        converted = convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:  # noqa: BLE001 - the converter raises bare Exceptions
        raise ExportError("float16 conversion failed: %s" % exc) from exc
    onnx.save(converted, str(dst))
    check_onnx(dst, expected_outputs=expected_outputs)


def make_int8(
    src: Path,
    dst: Path,
    *,
    method: Int8Method,
    expected_outputs: Iterable[str],
    calibration: Iterable[Mapping[str, np.ndarray]] = (),
) -> str:
    """Quantize the fp32 graph to int8; returns a short description of what was done.

    ``dynamic`` (``quantize_dynamic``) needs no data but turns every Conv into ConvInteger,
    which ONNX Runtime's CPU provider runs well below fp32 speed. ``static``
    (``quantize_static``, QDQ format, per-channel int8 weights, uint8 activations calibrated on
    the given feeds) turns the convolutions - nearly all of this network's time - into
    QLinearConv, which runs on the int8 GEMM kernels (VNNI where the CPU has it).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]]) -> None:
            self._feeds: Iterator[Mapping[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            feed = next(self._feeds, None)
            return None if feed is None else dict(feed)

    # ORT's quantizer logs advice through the root logger and warns; keep both out of the way.
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(max(previous_level, logging.ERROR))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if method == "dynamic":
                quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=False)
                description = (
                    "quantize_dynamic(weight_type=QInt8): Conv -> ConvInteger, MatMul/Gemm -> MatMulInteger"
                )
            else:
                quantize_static(
                    str(src),
                    str(dst),
                    _Reader(calibration),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"],
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
                description = (
                    "quantize_static(QDQ, Conv only, per-channel QInt8 weights, QUInt8 activations, "
                    "MinMax calibration on training-split articles)"
                )
        for item in caught:
            logger.debug("onnxruntime.quantization: %s: %s", item.category.__name__, item.message)
    except Exception as exc:  # noqa: BLE001 - the quantizer raises many types
        raise ExportError(
            "int8 quantization (%s) failed: %s: %s" % (method, type(exc).__name__, exc)
        ) from exc
    finally:
        root.setLevel(previous_level)
    check_onnx(dst, expected_outputs=expected_outputs)
    return description
