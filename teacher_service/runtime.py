"""The running service's state: billing, limits, metrics, and the teacher once it has loaded."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .batcher import DynamicBatcher
from .billing import BillingStore
from .encoder import ClipEncoder
from .errors import NotReady
from .faults import FaultInjector
from .images import decode_data_url, open_image
from .metrics import Metrics
from .ratelimit import RateLimiter
from .settings import Settings

log = logging.getLogger("vl2v.teacher")

EncoderFactory = Callable[[Settings], ClipEncoder]


def load_encoder(settings: Settings) -> ClipEncoder:
    """The default factory: the open_clip model the settings name."""
    return ClipEncoder.load(
        settings.model,
        settings.pretrained,
        device=settings.device,
        precision=settings.precision,
        allow_random=settings.allow_random_weights,
    )


class Teacher:
    """A loaded encoder behind two dynamic batchers (images, texts) sharing one model thread.

    Image bytes are decoded and preprocessed on `decode_workers` threads, so the event loop stays free and the
    model thread is fed while the next requests are decoded.
    """

    def __init__(self, encoder: ClipEncoder, settings: Settings, metrics: Metrics) -> None:
        self.encoder = encoder
        self.settings = settings
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="vl2v-model")
        self._decoders = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="vl2v-decode")

        def on_batch(size: int, seconds: float) -> None:
            metrics.batch_size.observe(size)
            metrics.batch_seconds.observe(seconds)

        wait = settings.batch_wait_ms / 1000
        self.images = DynamicBatcher(
            encoder.encode_images,
            self._model_thread,
            max_batch=settings.max_batch,
            max_wait_s=wait,
            on_batch=on_batch,
        )
        self.texts = DynamicBatcher(
            encoder.encode_texts,
            self._model_thread,
            max_batch=settings.max_batch,
            max_wait_s=wait,
            on_batch=on_batch,
        )

    def start(self) -> None:
        self.images.start()
        self.texts.start()

    async def stop(self) -> None:
        await self.images.stop()
        await self.texts.stop()
        self._model_thread.shutdown(wait=False, cancel_futures=True)
        self._decoders.shutdown(wait=False, cancel_futures=True)

    async def prepare_image(self, data_url: str, param: str) -> torch.Tensor:
        """Decode, validate and preprocess one image off the event loop; errors name `param`."""
        return await asyncio.get_running_loop().run_in_executor(self._decoders, self._prepare, data_url, param)

    def _prepare(self, data_url: str, param: str) -> torch.Tensor:
        data = decode_data_url(data_url, param, self.settings.max_image_bytes)
        return self.encoder.preprocess_image(open_image(data, param, self.settings.max_image_pixels))

    async def embed_texts(self, texts: list[str]) -> list[np.ndarray]:
        """One (D,) row per text; texts share model calls with other requests' texts."""
        return await self.texts.submit(list(self.encoder.tokenize(texts))) if texts else []


class ServiceState:
    """Everything a request handler needs, created by the app's lifespan."""

    def __init__(self, settings: Settings, store: BillingStore, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.limiter = RateLimiter(settings.rate_limit_requests, settings.rate_limit_images)
        self.faults = FaultInjector(settings)
        self.teacher: Teacher | None = None
        self.load_error: str | None = None

    def require_teacher(self) -> Teacher:
        if self.teacher is None:
            reason = f"model failed to load: {self.load_error}" if self.load_error else "model is still loading"
            raise NotReady(reason)
        return self.teacher
