"""Options shared by several commands, and the API key (environment or file, never a flag)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, overload

import typer

from cache.client import DEFAULT_URL
from student.config import TrainConfig, help_of

from .errors import fail


def flag(name: str, help: str) -> typer.models.OptionInfo:
    """An off-by-default switch: `--name` turns it on (there is no `--no-name`)."""
    return typer.Option(f"--{name}", help=help)


CacheDir = Annotated[Path, typer.Option("--cache", envvar="VL2V_CACHE", metavar="DIR", help="cache folder (LMDB)")]
# `vl2v cache info|verify|export|upgrade` also take the folder first, as earlier versions did.
CacheAlias = Annotated[Path | None, typer.Argument(metavar="CACHE", help="the same as --cache", show_default=False)]
DataDir = Annotated[
    Path,
    typer.Option(
        envvar="VL2V_DATA_DIR", metavar="DIR", help="folder holding the dataset folder (e.g. PACS/), or that folder"
    ),
]
TeacherUrl = Annotated[str, typer.Option(envvar="VL2V_TEACHER_URL", metavar="URL", help="the vendor's base URL")]
ApiKeyFile = Annotated[
    Path | None,
    typer.Option(metavar="FILE", help="file holding the API key (default: the VL2V_API_KEY environment variable)"),
]
Json = Annotated[bool, flag("json", "print exactly one JSON object on stdout (no progress, no table)")]
Device = Annotated[str, typer.Option(help=help_of(TrainConfig, "device"))]
Workers = Annotated[int, typer.Option(help=help_of(TrainConfig, "workers"))]
Seed = Annotated[int, typer.Option(help=help_of(TrainConfig, "seed"))]

DEFAULT_CACHE = Path("./cache")
DEFAULT_DATA = Path("./data")
DEFAULT_TEACHER = DEFAULT_URL


def one_cache(alias: Path | None, option: Path) -> Path:
    """The cache folder, given first or as --cache (or VL2V_CACHE); not two different ones."""
    if alias is None or option in (alias, DEFAULT_CACHE):
        return alias or option
    raise fail(f"two cache folders given: {alias} and --cache {option}; give one")


def choices(names: list[str] | tuple[str, ...]) -> str:
    return "one of: " + ", ".join(names)


@overload
def api_key(key_file: Path | None, *, env: str = ...) -> str: ...
@overload
def api_key(key_file: Path | None, *, required: bool, env: str = ...) -> str | None: ...
def api_key(key_file: Path | None, *, required: bool = True, env: str = "VL2V_API_KEY") -> str | None:
    """The key from `key_file`, else from the vendor's variable `env`; a clear error when neither is there."""
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as e:
            raise fail(f"cannot read --api-key-file {key_file}: {e.strerror}") from None
        if not key:
            raise fail(f"--api-key-file {key_file} is empty")
        return key
    key = os.environ.get(env, "").strip()
    if not key and required:
        raise fail(f"no API key: set {env} or pass --api-key-file FILE")
    return key or None
