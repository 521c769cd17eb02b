"""Whether the Hugging Face Hub can be reached, asked once in a few seconds rather than by a minute of retries.

timm fetches pretrained weights through `huggingface_hub`, which retries an unreachable hub five times with
back-off (about a minute) before it looks in its local cache. vl2v asks first: if the hub's host does not answer
a TCP connection within `PROBE_SECONDS`, the weights are looked up in the local cache only (the hub's own offline
mode, as `HF_HUB_OFFLINE=1` sets it), and a miss fails at once.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

PROBE_SECONDS = 3.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def unreachable(timeout: float = PROBE_SECONDS) -> str | None:
    """Why the hub cannot be reached now (offline mode, no name, no answer), or None when it may be.

    Behind a proxy vl2v cannot tell, and says None: the hub client then tries as it always does.
    """
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return None
    endpoint = urlsplit(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{host}:{port} does not answer ({e.strerror or type(e).__name__})"


def log_once() -> None:
    """Each of the hub client's warnings printed once: it writes them with a handler of its own and also passes
    them on to the root logger, which `vl2v` configures, so that every line would print twice."""
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.disable_propagation()


@contextlib.contextmanager
def local_cache_only() -> Iterator[None]:
    """The hub client's offline mode for the duration: files come from its local cache or not at all."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
