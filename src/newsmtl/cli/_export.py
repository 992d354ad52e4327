from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from newsmtl._errors import ConfigError


def _fmt(value: Any, pattern: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return pattern % value
    return "n/a"


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        run_dir: Path = typer.Argument(..., help="Run directory written by `newsmtl train`."),
        out: Path = typer.Option(..., "--out", help="Bundle directory to write."),
        fp16: bool = typer.Option(
            False, "--fp16", help="Ship the fp16 variant as model.onnx (for GPU serving)."
        ),
        quantize: str | None = typer.Option(
            None, "--quantize", help="'int8': ship the int8 variant as model.onnx (CPU serving)."
        ),
        int8_method: str = typer.Option(
            "static",
            "--int8-method",
            help="'static' (QDQ, calibrated on training articles; fast QLinearConv) or 'dynamic' "
            "(quantize_dynamic; ConvInteger, slower than fp32 on CPU).",
        ),
        force: bool = typer.Option(
            False,
            "--force",
            help="Write an fp16/int8 variant even if it loses more than 0.5 macro-F1 points.",
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle directory."),
        data: Path | None = typer.Option(
            None,
            "--data",
            help="Dataset file to recompute the dev split from (default: the path the run recorded).",
        ),
        model_name: str | None = typer.Option(None, "--model-name", help="Default: newsmtl-shared-private."),
        model_version: str | None = typer.Option(
            None, "--model-version", help="Default: <run date>-<first 8 hex of the checkpoint's sha256>."
        ),
        opset: int = typer.Option(17, "--opset", help="ONNX opset (>= 17)."),
        exporter: str = typer.Option("torchscript", "--exporter", help="'torchscript' or 'dynamo'."),
        max_dev_articles: int | None = typer.Option(
            None, "--max-dev-articles", help="Evaluate the variants on at most this many dev articles."
        ),
    ) -> None:
        """Export a trained run to a verified ONNX model bundle (model.onnx, tokenizer, manifest, card)."""
        if quantize not in (None, "int8"):
            raise ConfigError("--quantize supports only 'int8', got %r" % quantize)
        if int8_method not in ("static", "dynamic"):
            raise ConfigError("--int8-method must be 'static' or 'dynamic', got %r" % int8_method)
        if exporter not in ("torchscript", "dynamo"):
            raise ConfigError("--exporter must be 'torchscript' or 'dynamo', got %r" % exporter)
        if opset < 17:
            raise ConfigError("--opset must be at least 17, got %d" % opset)
        if max_dev_articles is not None and max_dev_articles < 1:
            raise ConfigError("--max-dev-articles must be positive")
        if not run_dir.is_dir():
            raise ConfigError("run directory %s does not exist" % run_dir)
        if data is not None and not data.is_file():
            raise ConfigError("--data %s is not a file" % data)

        from newsmtl.export._exporter import ExportOptions, export_run

        options = ExportOptions(
            fp16=fp16,
            quantize="int8" if quantize == "int8" else None,
            int8_method="dynamic" if int8_method == "dynamic" else "static",
            force=force,
            overwrite=overwrite,
            data_path=data,
            model_name=model_name,
            model_version=model_version,
            opset=opset,
            exporter="dynamo" if exporter == "dynamo" else "torchscript",
            max_dev_articles=max_dev_articles,
        )
        result = export_run(run_dir, out, options)
        manifest = result.manifest
        typer.echo(
            "wrote %s (%s %s, variant %s)"
            % (out, manifest["model_name"], manifest["model_version"], manifest["variant"])
        )
        for name, report in manifest["variants"].items():
            parity, accuracy = report["parity"], report["accuracy"]
            typer.echo(
                "  %-5s %-10s max|diff| %s  argmax agreement %s  dev acc %s  macro-F1 %s (delta %s)%s"
                % (
                    name,
                    report["file"] or "(not kept)",
                    _fmt(parity.get("max_abs_diff_probs"), "%.2e"),
                    _fmt(parity.get("topic_argmax_agreement"), "%.4f"),
                    _fmt(accuracy.get("accuracy"), "%.4f"),
                    _fmt(accuracy.get("macro_f1"), "%.4f"),
                    _fmt(accuracy.get("macro_f1_delta"), "%+.4f"),
                    "" if report["passed"] else "  BELOW BOUND (written with --force)",
                )
            )
        typer.echo(json.dumps({"files": manifest["files"]}, indent=None))
