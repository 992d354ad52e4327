"""The ``newsmtl`` command line: one Typer app, one module per component.

Each ``_<component>.py`` module exposes ``register(app)``. Heavy imports (torch, onnxruntime,
aiokafka) happen inside the command bodies so ``newsmtl --help`` stays fast and torch-free.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import typer

from newsmtl._errors import NewsmtlError
from newsmtl._version import __version__
from newsmtl.cli import _analysis, _demo, _export, _model, _replay, _schemas, _serve

__all__ = ["app", "main", "run"]

app = typer.Typer(
    name="newsmtl",
    help="Streaming news classification: topics and publication-style scores, Kafka to Kafka and Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo("newsmtl %s" % __version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


for _module in (_schemas, _export, _model, _serve, _analysis, _replay, _demo):
    _module.register(app)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status instead of exiting (handy in tests)."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=list(argv) if argv is not None else None, prog_name="newsmtl", standalone_mode=False)
    # Typer >= 0.26 vendors Click: its usage errors derive from typer.TyperException, not from
    # click.ClickException (and click is no longer installed with typer).
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.TyperException as exc:
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo("Error: %s" % exc, err=True)
        return int(exc.exit_code)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 130
    except NewsmtlError as exc:
        typer.echo("newsmtl: error: %s" % exc, err=True)
        return 2
    except OSError as exc:
        # Unwritable output paths, missing files and the like: a message, not a traceback.
        typer.echo("newsmtl: error: %s" % exc, err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        return 130
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
