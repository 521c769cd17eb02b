"""Run the vendor: check everything knowable before loading the model, bind the port, then serve with uvicorn.

Both `vl2v serve` and `python -m teacher_service` (the launcher libraries and tests use) call `serve(settings)`.
"""

from __future__ import annotations

import logging
import socket

from common.errors import ConfigError

from .settings import Settings

log = logging.getLogger("vl2v.teacher")


class ServeFailed(RuntimeError):
    """The service started but stopped on a failure it logged (e.g. the model would not load)."""


def serve(settings: Settings) -> None:
    """Serve until stopped (SIGINT/SIGTERM). Fails in one `ConfigError` or `OSError` line, before serving, on
    anything knowable without loading the model, cheapest first: the keys, the port, the weights named, then the
    billing database (the one with a side effect)."""
    for name in ("vl2v", "uvicorn"):
        logging.getLogger(name).setLevel(settings.log_level.upper())
    keys = settings.load_api_keys()
    listening = _listen(settings.host, settings.port)
    try:
        import uvicorn

        from common.weights import resolve_source

        from .app import create_app
        from .billing import open_billing

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
        raise ServeFailed(f"the service stopped: {failed[0]}")


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one clear line, not a server's traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it a
    # keep-alive response waits 40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock
