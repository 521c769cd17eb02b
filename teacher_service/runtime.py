"""The running service's state: billing, limits, metrics, and the teacher once it has loaded."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .batcher import DynamicBatcher
from .billing import BillingStore
from .encoder import ClipEncoder
from .errors import NotReady
from .faults import FaultInjector
from .images import EncodedImage, decode, read_header
from .metrics import Metrics
from .ratelimit import RateLimiter
from .settings import Settings

log = logging.getLogger("vl2v.teacher")

EncoderFactory = Callable[[Settings], ClipEncoder]
INLINE_TEXT_CHARS = 2000  # fewer characters are tokenized on the event loop (microseconds; a thread hop costs more)
INLINE_IMAGE_CHARS = 64 << 10  # images whose data URLs are this short in all have their headers read on the loop


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
        self.metrics = metrics
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
            max_admit_s=settings.batch_admit_ms / 1000,
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

    async def read_headers(self, images: dict[int, str]) -> list[EncodedImage]:
        """Every image item checked from its data URL and header alone, in input order: the first bad item fails
        the request before any image is decoded. Off the event loop, unless the URLs are short: a header read then
        takes a fraction of a millisecond, less than waiting for a decode thread that other requests keep busy."""
        settings = self.settings

        def read_all() -> list[EncodedImage]:
            return [
                read_header(url, f"input[{i}]", settings.max_image_bytes, settings.max_image_pixels)
                for i, url in images.items()
            ]

        if sum(map(len, images.values())) <= INLINE_IMAGE_CHARS:
            return read_all()
        return await asyncio.get_running_loop().run_in_executor(self._decoders, read_all)

    async def prepare_images(self, items: list[EncodedImage]) -> list[torch.Tensor]:
        """Decode and preprocess on the decode threads; on failure, the first bad item in input order."""
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(self._decoders, self._prepare, item) for item in items), return_exceptions=True
        )
        prepared = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            prepared.append(result)
        return prepared

    def _prepare(self, item: EncodedImage) -> torch.Tensor:
        started = time.perf_counter()
        image = decode(item)
        decoded = time.perf_counter()
        pixels = self.encoder.preprocess_image(image)
        self.metrics.decode_seconds.observe(decoded - started)
        self.metrics.preprocess_seconds.observe(time.perf_counter() - decoded)
        return pixels

    async def count_tokens(self, texts: list[str], limit: int) -> int | tuple[int, int]:
        """The BPE tokens of all texts, counted on a worker thread (a request may carry megabytes of text); or
        (position, tokens) of the first text longer than `limit`, where counting stops."""

        def count() -> int | tuple[int, int]:
            total = 0
            for position, text in enumerate(texts):
                tokens = self.encoder.count_tokens(text)
                if tokens > limit:
                    return position, tokens
                total += tokens
            return total

        if sum(map(len, texts)) <= INLINE_TEXT_CHARS:
            return count()
        return await asyncio.to_thread(count)

    async def embed_texts(self, texts: list[str]) -> list[np.ndarray]:
        """One (D,) row per text; texts share model calls with other requests' texts."""
        if not texts:
            return []
        if sum(map(len, texts)) <= INLINE_TEXT_CHARS:
            tokens = self.encoder.tokenize(texts)
        else:
            tokens = await asyncio.to_thread(self.encoder.tokenize, texts)
        return await self.texts.submit(list(tokens))


class ServiceState:
    """Everything a request handler needs, created by the app's lifespan."""

    def __init__(self, settings: Settings, store: BillingStore, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.limiter = RateLimiter(
            settings.rate_limit_requests, settings.rate_limit_images, buckets=store.shared_buckets()
        )
        self.faults = FaultInjector(settings)
        self.large_bodies = asyncio.Semaphore(1)  # JSON parsing holds the GIL: one large body at a time
        self.teacher: Teacher | None = None
        self.load_error: str | None = None

    def require_teacher(self) -> Teacher:
        if self.teacher is None:
            reason = f"model failed to load: {self.load_error}" if self.load_error else "model is still loading"
            raise NotReady(reason)
        return self.teacher
