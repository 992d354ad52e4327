"""``newsmtl analyze`` and ``newsmtl adapt`` (torch, sklearn and matplotlib load inside the bodies)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("analyze")
    def analyze_cmd(
        run_dir: Path = typer.Argument(..., help="Run directory written by `newsmtl train`."),
        data: Path | None = typer.Option(
            None, "--data", help="The data the run was trained on (default: the path recorded in the run)."
        ),
        out: Path = typer.Option(..., "--out", help="Directory for index.html, analysis.json and the PNG figures."),
        max_articles: int = typer.Option(
            3000, "--max-articles", help="At most this many training (probe fitting) and test articles each."
        ),
        projection: str = typer.Option("tsne", "--projection", help="tsne | pca."),
        seed: int = typer.Option(0, "--seed", help="Seed of the article samples, probes and projection."),
        threads: int = typer.Option(0, "--threads", help="Torch CPU threads (0: default)."),
    ) -> None:
        """Private-shared component analysis: probes, contributions, relatedness, language, projections."""
        import torch

        from newsmtl._errors import ConfigError
        from newsmtl.analysis import analyze_run
        from newsmtl.model import load_run

        if projection not in ("tsne", "pca"):
            raise ConfigError("--projection must be tsne or pca, got %r" % projection)
        if threads > 0:
            torch.set_num_threads(threads)
        if data is None:
            recorded = load_run(run_dir).data.get("path")
            if not recorded:
                raise ConfigError("%s records no data path; pass --data" % run_dir)
            data = Path(recorded)
        method: Literal["tsne", "pca"] = "tsne" if projection == "tsne" else "pca"
        result = analyze_run(run_dir, data, out, max_articles=max_articles, projection=method, seed=seed)
        s = result.summary
        typer.echo(
            "publication probe: shared %.3f, own private %.3f, all private %.3f (chance %.3f, majority %.3f); "
            "shared share of topic decisions %.3f"
            % (s["probe_publication_shared"], s["probe_publication_private_own"], s["probe_publication_private_all"],
               s["chance"], s["majority"], s["overall_shared_share"])
        )
        typer.echo("wrote %s and %s (+%d figures)" % (result.html, result.json, len(result.figures)))

    @app.command("adapt")
    def adapt_cmd(
        run_dir: Path = typer.Argument(..., help="Trained run directory to extend."),
        data: Path = typer.Option(..., "--data", help="Labelled articles of the new outlet (.jsonl, .jsonl.gz, .json)."),
        publication: str = typer.Option(..., "--publication", help="Name of the new outlet (must be new to the run)."),
        out: Path = typer.Option(..., "--out", help="Run directory to write (same format as `newsmtl train`)."),
        label_map: Path | None = typer.Option(
            None, "--label-map", help="JSON object or two-column TSV/CSV mapping the data's labels to model topics."
        ),
        max_train: int | None = typer.Option(None, "--max-train", help="Train on at most this many labelled articles."),
        eval_fraction: float = typer.Option(
            0.2, "--eval-fraction", help="Share of the articles held out to evaluate the new outlet (0 = none)."
        ),
        negatives: Path | None = typer.Option(
            None, "--negatives", help="Data with the old outlets' articles for the style score (default: the run's data)."
        ),
        style: bool = typer.Option(True, "--style/--no-style", help="Train the new outlet's style score."),
        self_name: list[str] = typer.Option(  # noqa: B008 - typer's idiom
            [], "--self-name", help="A name the outlet uses for itself, masked as [OUTLET] (repeatable)."
        ),
        epochs: int = typer.Option(30, "--epochs", help="Passes over the labelled articles (100..1500 steps)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the split, initialisation and batches."),
        threads: int = typer.Option(0, "--threads", help="Torch CPU threads (0: default)."),
    ) -> None:
        """Add a new outlet to a trained model: frozen shared encoder, new private slice, head and style score."""
        from newsmtl.analysis import AdaptConfig, adapt_run, load_label_map

        cfg = AdaptConfig(epochs=epochs, seed=seed, threads=threads)
        result = adapt_run(
            run_dir, data, publication=publication, out_dir=out,
            label_map=load_label_map(label_map) if label_map is not None else None, max_train=max_train,
            eval_fraction=eval_fraction, negatives_path=negatives, train_style=style, self_names=self_name, cfg=cfg,
        )
        line = "adapted %s -> %s: outlet %s trained on %d articles in %.0fs" % (
            run_dir, result.out_dir, result.publication, result.n_train, result.seconds
        )
        ev = result.metrics.get("eval")
        if ev:
            line += "; held-out (%d): topic accuracy %.3f, macro-F1 %.3f (shared head %.3f), style top-1 %.3f" % (
                ev["n"], ev["topic.accuracy"], ev["topic.macro_f1"], ev["shared_head.accuracy"], ev["style.top1"]
            )
        typer.echo(line)
