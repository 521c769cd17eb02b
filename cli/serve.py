"""`vl2v serve`: run the teacher vendor service."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from teacher_service.settings import Settings

from . import exit_codes
from .errors import reports_errors

log = logging.getLogger("vl2v.cli")


def _opt(field: str, help: str, *names: str) -> typer.models.OptionInfo:
    """An option backed by the Settings field of the same name: same default, same `VL2V_*` variable. A switch
    that is off by default is one flag (`--create-billing`), with no `--no-` twin."""
    if Settings.model_fields[field].default is False:
        names = (f"--{field.replace('_', '-')}",)
    return typer.Option(*names, envvar=f"VL2V_{field.upper()}", help=help, show_default=True)


_D = {name: f.default for name, f in Settings.model_fields.items()}


@reports_errors
def serve(
    model: Annotated[str, _opt("model", "open_clip model name, or local-dir:FOLDER")] = _D["model"],
    pretrained: Annotated[str | None, _opt("pretrained", "pretrained tag, checkpoint file or local-dir:FOLDER")] = _D[
        "pretrained"
    ],
    allow_random_weights: Annotated[bool, _opt("allow_random_weights", "serve random weights (tests only)")] = _D[
        "allow_random_weights"
    ],
    served_model_id: Annotated[str | None, _opt("served_model_id", "id clients send as 'model'")] = None,
    device: Annotated[str, _opt("device", "auto, cpu or cuda")] = _D["device"],
    precision: Annotated[str, _opt("precision", "fp32; bf16 or fp16 autocast on CUDA")] = _D["precision"],
    host: Annotated[str, _opt("host", "interface to bind")] = _D["host"],
    port: Annotated[int, _opt("port", "TCP port")] = _D["port"],
    state_dir: Annotated[Path, _opt("state_dir", "folder of the durable billing ledger")] = _D["state_dir"],
    keys_file: Annotated[Path | None, _opt("keys_file", "file of name:key:balance lines (also VL2V_API_KEYS)")] = None,
    create_billing: Annotated[
        bool, _opt("create_billing", "create the billing database if missing (first start with keys)")
    ] = _D["create_billing"],
    price_per_image: Annotated[float, _opt("price_per_image", "price of one image")] = _D["price_per_image"],
    price_per_1k_tokens: Annotated[float, _opt("price_per_1k_tokens", "price of 1,000 text tokens")] = _D[
        "price_per_1k_tokens"
    ],
    currency: Annotated[str, _opt("currency", "currency of prices and balances")] = _D["currency"],
    rate_limit_requests: Annotated[int, _opt("rate_limit_requests", "requests/min per key, 0 = unlimited")] = _D[
        "rate_limit_requests"
    ],
    rate_limit_images: Annotated[int, _opt("rate_limit_images", "images/min per key, 0 = unlimited")] = _D[
        "rate_limit_images"
    ],
    max_inputs: Annotated[int, _opt("max_inputs", "inputs per request")] = _D["max_inputs"],
    max_request_bytes: Annotated[int, _opt("max_request_bytes", "request body cap (413 above)")] = _D[
        "max_request_bytes"
    ],
    max_image_bytes: Annotated[int, _opt("max_image_bytes", "encoded size cap per image")] = _D["max_image_bytes"],
    max_image_pixels: Annotated[int, _opt("max_image_pixels", "width x height cap per image")] = _D["max_image_pixels"],
    body_timeout_s: Annotated[float, _opt("body_timeout_s", "seconds to receive a request body (408 after)")] = _D[
        "body_timeout_s"
    ],
    idempotency_ttl_s: Annotated[
        float, _opt("idempotency_ttl_s", "seconds an answer is replayed free under its Idempotency-Key")
    ] = _D["idempotency_ttl_s"],
    idempotency_lock_s: Annotated[
        float, _opt("idempotency_lock_s", "seconds an in-flight key is held (a dead replica's, then taken over)")
    ] = _D["idempotency_lock_s"],
    max_batch: Annotated[int, _opt("max_batch", "items per model call")] = _D["max_batch"],
    batch_wait_ms: Annotated[float, _opt("batch_wait_ms", "ms a batch waits to fill")] = _D["batch_wait_ms"],
    batch_admit_ms: Annotated[
        float, _opt("batch_admit_ms", "ms an image batch also waits for images of admitted requests")
    ] = _D["batch_admit_ms"],
    decode_workers: Annotated[int, _opt("decode_workers", "image decoding threads")] = _D["decode_workers"],
    log_level: Annotated[str, _opt("log_level", "debug, info, warning or error")] = _D["log_level"],
) -> None:
    """Serve CLIP embeddings behind a keyed, billed, rate-limited API (the vendor emulator).

    Keys come from VL2V_API_KEYS="alice:sk-alice:10.0,bob:sk-bob:2.5" or --keys-file, never from a flag; so does
    the ledger replicas share, VL2V_DATABASE_URL=postgresql://... (default: SQLite in --state-dir).
    """
    options = {k: v for k, v in locals().items() if v is not None}
    from teacher_service.billing import open_billing

    settings = Settings(**options)
    for name in ("vl2v", "uvicorn"):
        logging.getLogger(name).setLevel(settings.log_level.upper())
    # Fail in one line, before serving, on anything knowable without loading the model, cheapest first: the
    # settings, the keys, the port, the weights named, then the billing database (the one with a side effect).
    keys = settings.load_api_keys()
    listening = _listen(settings.host, settings.port)
    try:
        import uvicorn

        from teacher_service.app import create_app
        from teacher_service.encoder import resolve_source

        resolve_source(settings.model, settings.pretrained, settings.allow_random_weights)
        store = open_billing(settings)
    except BaseException:
        listening.close()
        raise
    if not keys:
        log.warning("no API keys configured (VL2V_API_KEYS or --keys-file): every request will get 401")

    failed: list[Exception] = []
    server: uvicorn.Server | None = None

    def stop_on_failure(error: Exception) -> None:
        failed.append(error)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, store=store, on_load_failure=stop_on_failure)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    log.info(
        "serving %s on http://%s:%d (%d keys, ledger in %s)",
        settings.model,
        settings.host,
        listening.getsockname()[1],
        len(keys),
        store.path,
    )
    server.run(sockets=[listening])
    if failed:
        raise typer.Exit(exit_codes.ERROR)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one clear line, not a server's traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock
