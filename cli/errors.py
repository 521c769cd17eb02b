"""User errors become one red line on stderr and a documented exit code; programming errors keep their traceback.

A user error is one of the typed errors below: a bad option or setting, a dataset, cache or vendor that cannot be
used, a file that cannot be read or written. Anything else (a bare `ValueError`, a `RuntimeError` from torch) is
a bug and shows its traceback. `vl2v --debug ...` or `VL2V_DEBUG=1` shows the traceback of every error."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from cache.client import QuotaExhausted, VendorAuthError, VendorError, VendorUnreachable
from cache.data.datasets import DatasetError
from cache.errors import UserError
from cache.store import CacheError
from common.errors import ConfigError, one_line

from . import exit_codes

F = TypeVar("F", bound=Callable)

# Library messages are printed as they are: no markup parsed in them (a `[...]` in a path) and no emoji
# (`name:key:balance` would otherwise show a key symbol).
stderr = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)
stdout = Console(highlight=False, emoji=False, markup=False)


def say(label: str, message: str, colour: str = "bold") -> None:
    """One line on stderr: a coloured label, then the message verbatim."""
    stderr.print(f"[{colour}]{label}[/{colour}] {escape(message)}")


# Most specific first.
_CODES: list[tuple[type[BaseException], int]] = [
    (VendorAuthError, exit_codes.AUTH_FAILED),
    (QuotaExhausted, exit_codes.QUOTA_EXHAUSTED),
    (VendorUnreachable, exit_codes.VENDOR_UNREACHABLE),
    (VendorError, exit_codes.ERROR),
    (ConfigError, exit_codes.ERROR),
    (ValidationError, exit_codes.ERROR),
    (DatasetError, exit_codes.ERROR),
    (CacheError, exit_codes.ERROR),
    (UserError, exit_codes.ERROR),
    (OSError, exit_codes.ERROR),
]


def debugging() -> bool:
    """`--debug` or VL2V_DEBUG=1: errors keep their traceback."""
    return os.environ.get("VL2V_DEBUG", "").strip().lower() in ("1", "true", "yes")


def exit_code_for(error: BaseException) -> int:
    return next((code for kind, code in _CODES if isinstance(error, kind)), exit_codes.ERROR)


def fail(message: str, code: int = exit_codes.ERROR) -> typer.Exit:
    say("error:", message, "red")
    return typer.Exit(code)


def reports_errors(command: F) -> F:
    """Wrap a command: user errors exit with their code and one line (unless debugging); Ctrl-C exits 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            stderr.print("interrupted")
            raise typer.Exit(exit_codes.INTERRUPTED) from None
        except tuple(kind for kind, _ in _CODES) as e:
            if debugging():
                raise
            raise fail(_one_line(e), exit_code_for(e)) from None

    return wrapper  # type: ignore[return-value]


def _one_line(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        return one_line(error)
    return str(error).replace("\n", " ")


@contextlib.contextmanager
def graceful_interrupt() -> Iterator[threading.Event]:
    """The first Ctrl-C sets the returned event (finish and save); a second one interrupts at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def first(signum, frame) -> None:
        stop.set()
        stderr.print("stopping: finishing the requests in flight and saving (Ctrl-C again to abort)")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
