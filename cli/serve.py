"""`vl2v serve`: run the teacher vendor service. Its options are the `Settings` fields, with their defaults, help and
`VL2V_*` variables: one source of truth, so the CLI and `python -m teacher_service` cannot drift apart."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal, get_args, get_origin

import typer

from teacher_service.server import ServeFailed
from teacher_service.server import serve as run
from teacher_service.settings import Settings

from . import exit_codes
from .errors import reports_errors

# The Settings fields that are options, in the order of the help. Keys and the shared ledger's URL are secrets,
# read from the environment only (VL2V_API_KEYS, VL2V_DATABASE_URL); fault injection (VL2V_FAULT_*) is for tests.
OPTIONS = (
    "model",
    "pretrained",
    "allow_random_weights",
    "served_model_id",
    "device",
    "precision",
    "host",
    "port",
    "state_dir",
    "keys_file",
    "create_billing",
    "price_per_image",
    "price_per_1k_tokens",
    "currency",
    "rate_limit_requests",
    "rate_limit_images",
    "max_inputs",
    "max_request_bytes",
    "max_image_bytes",
    "max_image_pixels",
    "max_text_chars",
    "body_timeout_s",
    "idempotency_ttl_s",
    "idempotency_lock_s",
    "max_batch",
    "batch_wait_ms",
    "batch_admit_ms",
    "decode_workers",
    "log_level",
)


def _parameter(name: str) -> inspect.Parameter:
    """The option for Settings field `name`. A switch that is off by default is one flag (`--create-billing`), with
    no `--no-` twin; a field without a default value shows none."""
    field = Settings.model_fields[name]
    names = (f"--{name.replace('_', '-')}",) if field.default is False else ()
    choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
    option = typer.Option(
        *names,
        envvar=f"VL2V_{name.upper()}",
        help=field.description,
        metavar="|".join(choices) if choices else None,
        show_default=True,
    )
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=Annotated[field.annotation, option]
    )


@reports_errors
def serve(**options: object) -> None:
    """Serve CLIP embeddings behind a keyed, billed, rate-limited API (the vendor emulator).

    Keys come from VL2V_API_KEYS="alice:sk-alice:10.0,bob:sk-bob:2.5" or --keys-file, never from a flag; so does
    the ledger replicas share, VL2V_DATABASE_URL=postgresql://... (default: SQLite in --state-dir).
    """
    try:
        given: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        run(Settings(**given))
    except ServeFailed:  # logged as it happened
        raise typer.Exit(exit_codes.ERROR) from None


serve.__signature__ = inspect.Signature([_parameter(name) for name in OPTIONS])  # type: ignore[attr-defined]
serve.__annotations__ = {}
