"""Every command's help reads well in a plain 80-column terminal, and messages print as they were written."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from cli.app import app

WIDTH = 80
_TYPE_LABEL = re.compile(r"<(bool|int|float|str|path|list\[[^\]]*\]|Path)>")
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff]")
_BUILT_IN = {"help", "version", "install_completion", "show_completion"}


def commands(group=None, path=()) -> list[tuple[tuple[str, ...], object]]:
    """Every command and group of `vl2v`, with the words that reach it."""
    group = group or typer.main.get_command(app)
    found = [(path, group)]
    for name, command in getattr(group, "commands", {}).items():
        found += commands(command, (*path, name)) if hasattr(command, "commands") else [((*path, name), command)]
    return found


ALL = commands()


def test_every_command_is_covered():
    names = {" ".join(path) for path, _ in ALL}
    assert {"demo", "serve", "query", "distill", "report", "cache info", "cache export", "data download"} <= names


@pytest.mark.parametrize(("path", "command"), ALL, ids=[" ".join(p) or "vl2v" for p, _ in ALL])
def test_help_reads_well_at_80_columns(path, command):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    text = result.output
    assert all(len(line) <= WIDTH for line in text.splitlines()), [ln for ln in text.splitlines() if len(ln) > WIDTH]
    assert not _TYPE_LABEL.search(text), _TYPE_LABEL.search(text)
    assert not _EMOJI.search(text)
    assert "╭" not in text and "{" not in text.splitlines()[0], "plain text, click's usage line"
    usage = text.splitlines()[0]
    for param in command.params:
        if param.param_type_name == "argument":
            assert (param.metavar or param.name.upper()) in usage, usage
        elif param.name not in _BUILT_IN:
            assert param.help, f"{' '.join(path)} --{param.name} has no help"
        if getattr(param, "is_flag", False) and param.default is False:
            assert not any(o.startswith("--no-") for o in param.secondary_opts), f"--{param.name}: one flag, no --no-"


def test_help_says_what_the_default_target_domain_is():
    text = CliRunner().invoke(app, ["distill", "--help"], env={"COLUMNS": str(WIDTH)}).output
    assert "[default: all]" in " ".join(text.split())


def test_a_malformed_key_entry_prints_name_key_balance_verbatim(tmp_path):
    result = CliRunner().invoke(
        app,
        ["serve", "--model", "vl2v-tiny", "--allow-random-weights", "--pretrained", "", "--state-dir", str(tmp_path)],
        env={"VL2V_API_KEYS": "alice"},
    )
    assert result.exit_code == 1
    assert "expected 'name:key:balance'" in result.output and "\U0001f511" not in result.output


def test_messages_with_brackets_are_not_read_as_markup(tmp_path):
    folder = tmp_path / "[bold]data[/bold]"
    result = CliRunner().invoke(
        app, ["query", "--dataset", "pacs", "--data-dir", str(folder)], env={"VL2V_API_KEY": "k"}
    )
    assert result.exit_code == 1 and "[bold]data[/bold]" in result.output


def test_the_cache_folder_is_given_the_same_way_everywhere(tmp_path):
    for command in (["cache", "info"], ["cache", "verify"], ["cache", "export"], ["zeroshot"], ["query"]):
        text = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": str(WIDTH)}).output
        assert "--cache DIR" in text, command
    missing = tmp_path / "nowhere"
    for args in (["cache", "info", str(missing)], ["cache", "info", "--cache", str(missing)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and f"no cache at {missing}" in result.output
    result = CliRunner().invoke(app, ["cache", "info", str(missing), "--cache", str(tmp_path / "other")])
    assert result.exit_code == 1 and "two cache folders given" in result.output
