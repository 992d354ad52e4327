from __future__ import annotations

from pathlib import Path

import typer

from newsmtl.schemas import write_json_schemas


def register(app: typer.Typer) -> None:
    @app.command("schemas")
    def schemas(
        out: Path = typer.Option(..., "--out", help="Directory to write one JSON Schema per wire model into."),
    ) -> None:
        """Write the JSON Schema of every wire model (Article, TopicResult, StyleResult, ...)."""
        for path in write_json_schemas(out):
            typer.echo(str(path))
