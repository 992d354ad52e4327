"""``newsmtl train`` and ``newsmtl evaluate`` (torch is imported inside the command bodies)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

__all__ = ["RichTrainReporter", "register"]


def _interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


class RichTrainReporter:
    """A rich progress bar with live losses and the last dev metrics (stderr, TTY only)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            TextColumn("[cyan]{task.fields[dev]}"),
            console=self.console,
            transient=False,
        )
        self.task: Any = None
        self._smoothed: dict[str, float] = {}

    def on_start(self, *, total_steps: int, done_steps: int, info: dict[str, Any]) -> None:
        self.console.print(
            "training: %(train)d train / %(dev)d dev articles, %(topics)d topics, %(outlets)d modelled outlets, "
            "%(device)s, %(threads)d threads" % info
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=done_steps, epoch="-", losses="", dev="")

    def on_step(self, *, step: int, epoch: int, losses: dict[str, float], lr: float) -> None:
        for key, value in losses.items():
            old = self._smoothed.get(key)
            self._smoothed[key] = value if old is None else 0.95 * old + 0.05 * value
        text = " ".join("%s %.3f" % (k, v) for k, v in self._smoothed.items()) + " lr %.1e" % lr
        self.progress.update(self.task, completed=step, epoch=epoch, losses=text)

    def on_epoch(self, *, epoch: int, metrics: dict[str, Any], improved: bool, seconds: float) -> None:
        style = metrics.get("style.top1")
        dev = "dev F1 %.3f acc %.3f%s%s" % (
            metrics["topic.macro_f1"], metrics["topic.accuracy"],
            " style %.3f" % style if style is not None else "", " *" if improved else "",
        )
        self.progress.update(self.task, dev=dev)

    def on_end(self, *, stopped_early: bool) -> None:
        self.progress.stop()
        if stopped_early:
            self.console.print("stopped early: dev topic macro-F1 stopped improving")


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        data: Path = typer.Option(..., "--data", help="Training data: JSONL, JSONL.gz, JSON or CSV."),
        out: Path = typer.Option(..., "--out", help="Run directory to create (or continue with --resume)."),
        preset: str = typer.Option(
            None, "--preset", help="tiny | base | full | wide | topic-first | single-task | fully-shared | shared-private (default base)."
        ),
        config: Path = typer.Option(None, "--config", help="JSON/TOML file overriding preset values."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
        seed: int = typer.Option(None, "--seed", help="Random seed (subset, split, init, batch order)."),
        max_articles: int = typer.Option(None, "--max-articles", help="Train on a seeded random subset."),
        field: list[str] = typer.Option(  # noqa: B008 - typer's idiom
            [], "--field", help="Map a logical field to a column: --field text=body (repeatable)."
        ),
        label_field: str = typer.Option(None, "--label-field", help="Column holding the topic label (default topic_coarse)."),
        threads: int = typer.Option(None, "--threads", help="Torch CPU threads (default: the free CPUs, at least 1)."),
        device: str = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N."),
        progress: bool = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: only on a TTY)."),
        mask_config: Path = typer.Option(
            None, "--mask-config",
            help='JSON outlet-masking override, e.g. {"outlets": {"example.com": ["Example News"]}}.',
        ),
        cache_dir: Path = typer.Option(
            None, "--cache-dir", envvar="NEWSMTL_TOKEN_CACHE",
            help="Reuse the tokenizer and token ids of earlier runs on the same split and text config.",
        ),
    ) -> None:
        """Train the shared-private multitask model into a run directory."""
        from newsmtl.model import load_train_config, parse_field_overrides, train
        from newsmtl.model._train import NullReporter

        overrides: dict[str, Any] = {
            "seed": seed, "max_articles": max_articles, "label_field": label_field, "threads": threads, "device": device,
        }
        if field:
            overrides["fields"] = parse_field_overrides(field)
        if mask_config is not None:
            from newsmtl.text import OutletMasker

            OutletMasker.from_json_file(mask_config)  # validates, with a clear error
            overrides["masking"] = json.loads(mask_config.read_text(encoding="utf-8"))
        cfg = load_train_config(config, preset=preset, **overrides)
        show = _interactive() if progress is None else progress
        reporter = RichTrainReporter() if show else NullReporter()
        result = train(data, out, cfg, resume=resume, reporter=reporter, cache_dir=cache_dir)
        m = result.dev_metrics
        typer.echo(
            "run %s: best epoch %d of %d, dev topic macro-F1 %.4f, accuracy %.4f, %.0fs"
            % (result.run_dir, result.best_epoch, result.epochs_run, m["topic.macro_f1"], m["topic.accuracy"],
               result.train_seconds)
        )

    @app.command("evaluate")
    def evaluate_cmd(
        run_dir: Path = typer.Argument(..., help="Run directory written by `newsmtl train`."),
        data: Path = typer.Option(..., "--data", help="The data the run was trained on (or other data with --split all)."),
        out: Path = typer.Option(..., "--out", help="REPORT.json to write; REPORT.md is written beside it."),
        split: str = typer.Option("test", "--split", help="test | dev | train | all."),
        field: list[str] = typer.Option(  # noqa: B008 - typer's idiom
            [], "--field", help="Column mapping for other data: --field text=body (repeatable)."
        ),
        threads: int = typer.Option(0, "--threads", help="Torch CPU threads (0: default)."),
    ) -> None:
        """Evaluate a run: topic, style and bias metrics with majority baselines (JSON + markdown)."""
        from newsmtl._errors import ConfigError
        from newsmtl.model import evaluate_run, parse_field_overrides, write_report

        if split not in ("test", "dev", "train", "all"):
            raise ConfigError("--split must be test, dev, train or all, got %r" % split)
        report = evaluate_run(
            run_dir, data, split=split, fields=parse_field_overrides(field) if field else None, threads=threads
        )
        json_path, md_path = write_report(report, out, run_dir=run_dir)

        def fmt(key: str) -> str:
            value = report.get(key)
            return "%.4f" % value if isinstance(value, float) else "-"

        typer.echo(
            "%s (%d articles): topic macro-F1 %s (majority %s), accuracy %s, style top1 %s top3 %s, bias macro-F1 %s"
            % (split, report["data"]["n"], fmt("topic.macro_f1"), fmt("baseline.topic.macro_f1"),
               fmt("topic.accuracy"), fmt("style.top1"), fmt("style.top3"), fmt("bias.macro_f1"))
        )
        typer.echo("wrote %s and %s" % (json_path, md_path))
