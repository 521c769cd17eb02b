"""The typer app `vl2v`: each command parses options, calls one library function and reports."""

from __future__ import annotations

import logging
import sys
from importlib.metadata import version
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from teacher_service.settings import ConfigError

from . import exit_codes
from .serve import serve

app = typer.Typer(
    name="vl2v",
    help="Distil a pay-per-query CLIP teacher into a small, domain-robust image classifier.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command(no_args_is_help=False)(serve)

_stderr = Console(stderr=True, soft_wrap=True)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"vl2v {version('vl2v')}")
        raise typer.Exit()


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """vl2v: serve a CLIP teacher, query it on a budget, distil a student offline."""


def main() -> None:
    """Console-script entry point: library errors become one red line and a documented exit code."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for name in ("vl2v", "uvicorn"):  # libraries that log to the root logger (open_clip) stay quiet
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        app()
    except (ConfigError, ValidationError) as e:
        _stderr.print(f"[red]error:[/red] {_one_line(e)}", highlight=False)
        sys.exit(exit_codes.ERROR)
    except KeyboardInterrupt:
        sys.exit(exit_codes.INTERRUPTED)


def _one_line(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
    return str(error)
