"""Service settings: every option is a field here, read from `VL2V_*` environment variables or given directly."""

from __future__ import annotations

import logging
import math
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ConfigError

log = logging.getLogger("vl2v.teacher")

MAX_BALANCE = 1e9  # in the price currency; balances are int64 nano-units, which hold about 9.2e9
MAX_PRICE = 1e6


@dataclass(frozen=True)
class ApiKey:
    """One configured API key: the owner's name, the secret, and the balance it starts with."""

    name: str
    secret: str
    balance: float


def parse_api_keys(text: str, source: str) -> list[ApiKey]:
    """Parse `name:key:balance` entries separated by commas or newlines; `#` starts a comment.

    The key itself may contain colons: the name is everything before the first one, the balance after the last.
    """
    keys = []
    for lineno, raw in enumerate(text.replace(",", "\n").splitlines(), start=1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        name, _, rest = entry.partition(":")
        secret, _, balance = rest.rpartition(":")
        if not name or not secret or not balance:
            raise ConfigError(f"{source} entry {lineno}: expected 'name:key:balance', got {_redact(entry)!r}")
        try:
            amount = float(balance)
        except ValueError:
            # The balance is not echoed: when the balance was forgotten, this field is the end of the key.
            raise ConfigError(f"{source} entry {lineno} ({name}): the balance is not a number") from None
        if not math.isfinite(amount) or not 0 <= amount <= MAX_BALANCE:
            raise ConfigError(f"{source} entry {lineno} ({name}): balance must be in [0, {MAX_BALANCE:g}]")
        keys.append(ApiKey(name=name, secret=secret, balance=amount))
    check_unique(keys, source)
    return keys


def check_unique(keys: list[ApiKey], source: str) -> None:
    """Two entries may share neither a name nor a secret (one secret must identify one account)."""
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: duplicate key names {sorted({n for n in names if names.count(n) > 1})}")
    owners: dict[str, str] = {}
    for key in keys:
        if key.secret in owners:
            raise ConfigError(f"{source}: keys {owners[key.secret]!r} and {key.name!r} have the same secret")
        owners[key.secret] = key.name


def _redact(entry: str) -> str:
    name, _, rest = entry.partition(":")
    return f"{name}:***" if rest else "***"


def warn_if_readable_by_others(path: Path) -> None:
    """A keys file others can read gives away every account: say so (the service still starts)."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "keys file %s is readable by other users (mode %s); make it owner-only: chmod 600 %s",
            path,
            oct(mode & 0o777),
            path,
        )


class Settings(BaseSettings):
    """Everything `vl2v serve` can be told. Each field `x` is also the environment variable `VL2V_X`."""

    model_config = SettingsConfigDict(env_prefix="VL2V_", extra="forbid", frozen=True)

    # The model: an open_clip name plus a pretrained tag or checkpoint file, or `local-dir:FOLDER`.
    model: str = Field("ViT-B-16", description="open_clip model name, or local-dir:FOLDER with config + weights")
    pretrained: str | None = Field("openai", description="pretrained tag, checkpoint file, or local-dir:FOLDER")
    served_model_id: str | None = Field(None, description="id clients send as `model` (default: derived)")
    allow_random_weights: bool = Field(False, description="serve randomly initialised weights (tests only)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto (a GPU when there is one), cpu or cuda")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="fp32; bf16 or fp16 autocast on CUDA")

    host: str = Field("127.0.0.1", description="interface to bind")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    state_dir: Path = Field(
        Path("./state"), description="the key-hashing secret, and the SQLite ledger when no database_url is given"
    )
    database_url: str | None = Field(
        None,
        repr=False,
        description="postgresql://USER:PASSWORD@HOST/DB: one ledger shared by replicas (default: SQLite in state_dir)",
    )

    # Keys: `name:key:balance` entries, from VL2V_API_KEYS and/or a file with one entry per line.
    api_keys: str = Field("", repr=False, description="name:key:balance[,name:key:balance...]")
    keys_file: Path | None = Field(None, description="file of name:key:balance lines (also VL2V_API_KEYS)")

    idempotency_ttl_s: float = Field(
        86_400.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds a completed answer is kept for free replay (Stripe: 24 h); later, the key is new",
    )
    idempotency_lock_s: float = Field(
        90.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds an in-flight Idempotency-Key is held; a dead replica's claim is taken over after it",
    )
    create_billing: bool = Field(
        False,
        description="create the billing database if it is missing, although keys are configured (first start only)",
    )

    price_per_image: float = Field(0.0001, ge=0, le=MAX_PRICE, allow_inf_nan=False, description="price of one image")
    price_per_1k_tokens: float = Field(
        0.00002, ge=0, le=MAX_PRICE, allow_inf_nan=False, description="price of 1,000 text tokens"
    )
    currency: str = Field("USD", description="currency of prices and balances")

    rate_limit_requests: int = Field(600, ge=0, description="requests per minute per key (0: unlimited)")
    rate_limit_images: int = Field(60_000, ge=0, description="images per minute per key (0: unlimited)")
    max_inputs: int = Field(256, ge=1, description="inputs per request")
    max_request_bytes: int = Field(32 * 2**20, ge=1024, description="request body cap (413 above)")
    max_image_bytes: int = Field(8 * 2**20, ge=1, description="encoded size cap per image")
    max_image_pixels: int = Field(40_000_000, ge=1, description="width x height; larger images are refused")
    max_text_chars: int = Field(4096, ge=1, description="characters per text input")
    body_timeout_s: float = Field(
        30.0, gt=0, allow_inf_nan=False, description="seconds a client may take to send a request body (408 after)"
    )

    max_batch: int = Field(64, ge=1, description="images (or texts) per model call")
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=10_000,
        allow_inf_nan=False,
        description="ms a batch waits to fill with requests not yet admitted (admitted ones: --batch-admit-ms)",
    )
    batch_admit_ms: float = Field(
        50.0,
        ge=0,
        allow_inf_nan=False,
        description="ms an image batch also waits for images of requests already admitted and still decoding",
    )
    decode_workers: int = Field(2, ge=1, description="threads decoding and preprocessing images")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="what the log shows")

    # Fault injection, for reliability tests; all off by default, settable only from the environment.
    fault_error_rate: float = Field(
        0.0, ge=0, le=1, allow_inf_nan=False, description="share of requests answered 500/503 at once"
    )
    fault_latency_ms: float = Field(
        0.0, ge=0, le=600_000, allow_inf_nan=False, description="delay added to every embeddings request"
    )
    fault_drop_rate: float = Field(
        0.0, ge=0, le=1, allow_inf_nan=False, description="share of charged answers cut off mid-body"
    )
    fault_seed: int = 0

    @field_validator("pretrained", "served_model_id", "keys_file", "database_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.precision != "fp32" and self.device == "cpu":
            raise ValueError(f"precision {self.precision!r} is autocast on CUDA only; use fp32 with device cpu")
        if self.keys_file is not None and not self.keys_file.is_file():
            raise ValueError(f"keys_file {str(self.keys_file)!r} does not exist")
        return self

    def load_api_keys(self) -> list[ApiKey]:
        """All configured keys, from `api_keys` and `keys_file` together."""
        keys = parse_api_keys(self.api_keys, "VL2V_API_KEYS")
        if self.keys_file is not None:
            warn_if_readable_by_others(self.keys_file)
            keys += parse_api_keys(self.keys_file.read_text(), str(self.keys_file))
        check_unique(keys, "VL2V_API_KEYS and the keys file together")
        return keys
