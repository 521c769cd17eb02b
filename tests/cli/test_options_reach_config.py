"""Every option of the commands that train reaches the configuration they run: none is parsed and then dropped.

For each option, the command runs once with that option alone set to a value other than its default; the library
call is replaced by one that records its configuration. The configuration must differ from the defaults' one.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

import cli.demo_pipeline
import student.run
import student.sweep
from cli.app import app

# Values for options whose type alone does not say what a valid other value is.
OTHER = {
    "method": "kd",
    "methods": "erm,kd",
    "student": "resnet18",
    "student_weights": "weights.pt",
    "test_domain": "photo",
    "target": "painting",
    "holdout": "cartoon",
    "set_": "lr=0.1",
    "device": "cpu",
    "context_bias": "0.5",
}
REQUIRED = {"sweep": ["--cache", "c", "--methods", "erm", "--out", "o"]}
# Options that choose how a command runs or reports, not what it computes; each is tested where it acts.
NOT_CONFIG = {"json_out", "launcher", "jobs", "slurm_partition", "slurm_hours", "slurm_gpus", "dry_run"}


class Captured(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    seen = []

    def record(config, *args, **kwargs):
        seen.append(config)
        raise Captured

    monkeypatch.setattr(student.run, "distill", record)
    monkeypatch.setattr(cli.demo_pipeline, "run_demo", record)
    monkeypatch.setattr(student.sweep, "plan", record)
    return seen


def _options(command: str) -> list[tuple[object, type]]:
    """(option, its Python type) for each option of the command."""
    built = typer.main.get_command(app).commands[command]
    hints = typing.get_type_hints(inspect.unwrap(built.callback))
    hints.pop("return", None)
    kinds = {name: next(a for a in typing.get_args(h) or (h,) if a is not type(None)) for name, h in hints.items()}
    return [(p, kinds[p.name]) for p in built.params if p.param_type_name == "option" and p.name not in NOT_CONFIG]


def _other(option, kind: type) -> list[str]:
    if option.name in OTHER:
        return [option.opts[0], OTHER[option.name]]
    if option.is_flag:
        return [option.secondary_opts[0] if option.default else option.opts[0]]
    if kind is int:
        return [option.opts[0], str((option.default or 0) + 3)]
    if kind is float:
        return [option.opts[0], str((option.default or 0.2) / 2)]
    if kind is Path:
        return [option.opts[0], "elsewhere"]
    raise AssertionError(f"no other value known for {option.opts[0]}: add it to OTHER")


def _config(command: str, args: list[str], captured: list) -> object:
    result = CliRunner().invoke(app, [command, *REQUIRED.get(command, []), *args])
    assert isinstance(result.exception, Captured), (args, result.output, result.exception)
    return captured.pop()


@pytest.mark.parametrize("command", ["distill", "demo", "sweep"])
def test_every_option_changes_the_configuration(command, captured, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = _config(command, [], captured)
    options = _options(command)
    assert len(options) >= 10
    ignored = [o.opts[0] for o, kind in options if _config(command, _other(o, kind), captured) == default]
    assert ignored == [], f"vl2v {command} accepts these options and ignores them"


def _changed(default: object, config: object) -> list[dataclasses.Field]:
    """The fields (of the config and of configs nested in it) whose values differ."""
    changed = []
    for f in dataclasses.fields(default):  # type: ignore[arg-type]
        before, after = getattr(default, f.name), getattr(config, f.name)
        if dataclasses.is_dataclass(before):
            changed += _changed(before, after)
        elif before != after:
            changed.append(f)
    return changed


@pytest.mark.parametrize("command", ["distill", "demo", "sweep"])
def test_an_option_shows_the_help_written_on_the_field_it_sets(command, captured, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = _config(command, [], captured)
    checked = 0
    for option, kind in _options(command):
        changed = _changed(default, _config(command, _other(option, kind), captured))
        if len(changed) == 1 and "help" in changed[0].metadata:  # (--quick and --method set several)
            field = changed[0]
            assert field.metadata["help"] in option.help, f"{option.opts[0]} does not show {field.name}'s help"
            checked += 1
    assert checked >= 8, "the configs document their fields"


def test_the_demos_lr_reaches_every_method(captured, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config("demo", ["--lr", "0.003"], captured)
    for method in config.methods:
        assert cli.demo_pipeline.distill_config(config, method).overrides["lr"] == "0.003"
    assert Path("vl2v-demo").exists() is False  # nothing ran
