"""Help that reads well in a plain 80-column terminal: click's conventions (`--steps N`, `RUN...`), no boxes.

Typer's defaults label every option with its Python type (`<list[str]>`, even `<bool>` for flags) and put
required arguments in braces (`{runs}`); these command classes give each option a word for its value and each
argument its name in capitals, and the app renders help as plain text (no rich markup, so `name:key:balance`
never turns into an emoji).
"""

from __future__ import annotations

from typing import Any, cast

from typer import _click
from typer.core import TyperCommand, TyperGroup

# The word shown for an option's value, by its Python type, when the option names none itself.
_METAVARS = {"Path": "PATH", "int": "N", "float": "NUMBER", "str": "TEXT"}
MAX_WIDTH = 80
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": MAX_WIDTH}


class Command(TyperCommand):
    """A command whose help uses click's plain conventions."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.param_type_name == "option" and not getattr(param, "is_flag", False) and param.metavar is None:
                kind = cast(Any, param).bare_type().removeprefix("list[").removesuffix("]")
                param.metavar = _METAVARS.get(kind, kind.upper())

    def collect_usage_pieces(self, ctx: _click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_usage(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_options(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_usage(param).strip("[]"), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class Group(TyperGroup):
    """A group of commands, with the same help conventions."""


def _usage(argument: _click.Parameter) -> str:
    """RUN..., [PATH]: the argument's name in capitals, brackets when optional, dots when repeatable."""
    name = argument.metavar or (argument.name or "").upper()
    name += "..." if argument.nargs != 1 else ""
    return name if argument.required else f"[{name}]"
