"""The typer app `vl2v`: each command parses options, calls one library function and reports."""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import version
from typing import Annotated

import typer

from .cache_cmd import cache_app
from .data import data_app
from .demo import demo
from .distill import distill_command
from .export_cmd import export_command
from .help import CONTEXT, Command, Group
from .query import query
from .serve import serve
from .student_cmds import evaluate, predict, report, zeroshot
from .sweep import sweep

app = typer.Typer(
    name="vl2v",
    help="Distil a pay-per-query CLIP teacher into a small, domain-robust image classifier.",
    context_settings=CONTEXT,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=Group,
)
for name, command in [
    ("demo", demo),
    ("serve", serve),
    ("query", query),
    ("distill", distill_command),
    ("zeroshot", zeroshot),
    ("evaluate", evaluate),
    ("predict", predict),
    ("export", export_command),
    ("report", report),
    ("sweep", sweep),
]:
    app.command(name, cls=Command)(command)  # type: ignore[type-var]
app.add_typer(cache_app, name="cache")
app.add_typer(data_app, name="data")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"vl2v {version('vl2v')}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="VL2V_DEBUG", help="Show the traceback of any error (also VL2V_DEBUG=1)."),
    ] = False,
    _version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """vl2v: serve a CLIP teacher, query it on a budget, distil a student offline."""
    if debug:
        os.environ["VL2V_DEBUG"] = "1"  # read by cli.errors, and inherited by a vendor the command starts


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for name in ("vl2v", "uvicorn"):  # libraries that log to the root logger (open_clip) stay quiet
        logging.getLogger(name).setLevel(logging.INFO)
    app()
