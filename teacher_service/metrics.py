"""Counters and histograms rendered in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)  # one image's decode or preprocess


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"


class Counter:
    def __init__(self, name: str, help: str) -> None:
        self.name, self.help = name, help
        self._values: dict[tuple, float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] += amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            lines += [f"{self.name}{_labels(k)} {v:g}" for k, v in sorted(self._values.items())]
        return lines


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.buckets = name, help, buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            cumulative = 0
            for bound, count in zip((*self.buckets, float("inf")), self._counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f'{self.name}_bucket{{le="{le}"}} {cumulative}')
            lines += [f"{self.name}_sum {self._sum:g}", f"{self.name}_count {cumulative}"]
        return lines


class Metrics:
    """The service's metrics; one instance per app."""

    def __init__(self) -> None:
        self.requests = Counter("vl2v_requests_total", "HTTP requests by route and status code")
        self.errors = Counter("vl2v_errors_total", "error responses by status code and error code")
        self.images = Counter("vl2v_images_total", "images embedded and billed")
        self.texts = Counter("vl2v_texts_total", "texts embedded and billed")
        self.latency = Histogram("vl2v_request_latency_seconds", "request latency", LATENCY_BUCKETS)
        self.batch_size = Histogram("vl2v_batch_size", "items per model call", BATCH_BUCKETS)
        self.batch_seconds = Histogram("vl2v_batch_seconds", "seconds per model call", LATENCY_BUCKETS)
        self.decode_seconds = Histogram(
            "vl2v_image_decode_seconds", "seconds per image: base64 and image decoding", STEP_BUCKETS
        )
        self.preprocess_seconds = Histogram(
            "vl2v_image_preprocess_seconds",
            "seconds per image: the model's resize, crop and normalisation",
            STEP_BUCKETS,
        )

    def render(self) -> str:
        parts = (
            self.requests,
            self.errors,
            self.images,
            self.texts,
            self.latency,
            self.batch_size,
            self.batch_seconds,
            self.decode_seconds,
            self.preprocess_seconds,
        )
        return "\n".join(line for part in parts for line in part.render()) + "\n"
