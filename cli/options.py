"""Options shared by several commands, and the API key (environment or file, never a flag)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cache.client import DEFAULT_URL

from .errors import fail

CacheDir = Annotated[Path, typer.Option("--cache", envvar="VL2V_CACHE", help="cache folder (LMDB)")]
CacheArg = Annotated[Path, typer.Argument(envvar="VL2V_CACHE", help="cache folder (LMDB)", show_default=True)]
DataDir = Annotated[
    Path,
    typer.Option(envvar="VL2V_DATA_DIR", help="folder holding the dataset folder (e.g. PACS/), or that folder"),
]
TeacherUrl = Annotated[str, typer.Option(envvar="VL2V_TEACHER_URL", help="the vendor's base URL")]
ApiKeyFile = Annotated[
    Path | None, typer.Option(help="file holding the API key (default: the VL2V_API_KEY environment variable)")
]
Json = Annotated[bool, typer.Option("--json", help="print exactly one JSON object on stdout")]

DEFAULT_CACHE = Path("./cache")
DEFAULT_DATA = Path("./data")
DEFAULT_TEACHER = DEFAULT_URL


def api_key(key_file: Path | None, *, required: bool = True) -> str | None:
    """The key from `key_file`, else from VL2V_API_KEY; a clear error when neither is there."""
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as e:
            raise fail(f"cannot read --api-key-file {key_file}: {e.strerror}") from None
        if not key:
            raise fail(f"--api-key-file {key_file} is empty")
        return key
    key = os.environ.get("VL2V_API_KEY", "").strip()
    if not key and required:
        raise fail("no API key: set VL2V_API_KEY or pass --api-key-file FILE")
    return key or None
