"""The vendors vl2v buys from, each a small adapter beneath the one query job (`cache.query`).

`vl2v` is vl2v's own vendor (`cache.client.TeacherClient`, with fingerprints, idempotency keys and an account);
the others are `adapter.VendorAdapter`s: infinity-emb, self-hosted, and the hosted Jina, Cohere and Voyage APIs.
"""

from __future__ import annotations

import importlib
import os

from ..client import DEFAULT_URL, RetryPolicy, TeacherClient
from ..errors import InvalidOption
from ..pricing import PriceModel
from .adapter import VendorAdapter

# name -> (module, class); imported on demand
ADAPTERS = {
    "infinity": ("infinity", "Infinity"),
    "jina": ("jina", "Jina"),
    "cohere": ("cohere", "Cohere"),
    "voyage": ("voyage", "Voyage"),
}
VENDORS = ("vl2v", *ADAPTERS)
KEY_ENV = {"vl2v": "VL2V_API_KEY", "infinity": "INFINITY_API_KEY", "jina": "JINA_API_KEY",
           "cohere": "COHERE_API_KEY", "voyage": "VOYAGE_API_KEY"}  # fmt: skip


def adapter_class(name: str) -> type[VendorAdapter]:
    if name not in ADAPTERS:
        raise InvalidOption(f"--vendor {name!r} is not one of {list(VENDORS)}")
    module, cls = ADAPTERS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def key_from_env(name: str) -> str | None:
    """The vendor's own key variable, and no other vendor's: a Jina key is never sent to Cohere."""
    if name not in KEY_ENV:
        raise InvalidOption(f"--vendor {name!r} is not one of {list(VENDORS)}")
    return os.environ.get(KEY_ENV[name], "").strip() or None


def connect(
    name: str,
    url: str | None,
    api_key: str | None,
    *,
    model: str | None = None,
    price: PriceModel | None = None,
    retry: RetryPolicy | None = None,
) -> TeacherClient:
    """A client of vendor `name` at `url` (None: the vendor's own address)."""
    if name == "vl2v":
        if model is not None or price is not None:
            raise InvalidOption(
                "vl2v's own vendor names its model and prices itself: drop --vendor-model and --price-*"
            )
        if not api_key:
            raise InvalidOption(f"no API key: set {KEY_ENV[name]} or pass --api-key-file FILE")
        return TeacherClient(url or DEFAULT_URL, api_key, retry=retry or RetryPolicy())
    cls = adapter_class(name)
    if not api_key and cls.HOSTS:
        raise InvalidOption(f"no API key for {name}: set {KEY_ENV[name]} or pass --api-key-file FILE")
    return cls(url, api_key, model=model, price=price, retry=retry)
