"""Shared fixtures: test images, a tiny open_clip checkpoint, and the service on a real loopback socket.

The images are the real PACS subset in `../shared/data` (or `VL2V_TEST_DATA`) when it is there, and a PACS-shaped
folder drawn by the demo world when it is not (`tests/generated_data.py`), so a bare clone passes too.
`VL2V_TEST_DATA=generated` forces the drawn folder where the real one exists (CI runs both ways)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import open_clip
import pytest
import requests
import torch
from safetensors.torch import save_file

from common.weights import register_packaged_configs
from teacher_service.app import create_app
from teacher_service.local import free_port
from teacher_service.runtime import EncoderFactory, load_encoder
from teacher_service.settings import Settings

from .generated_data import write_pacs_like
from .postgres import INSTALL, PostgresServer, postgres_bin, postgres_server

REPO = Path(__file__).resolve().parents[1]


def images_folder(setting: str | None, beside: Path) -> Path | None:
    """The real PACS subset that `VL2V_TEST_DATA` names: the pacs-mini folder itself or the folder holding it;
    "generated" for none; unset, `shared/data/pacs-mini` beside the clone if it is there. A folder named that
    holds neither is an error, not a silent switch to the drawn images."""
    if setting == "generated":
        return None
    if setting is None:
        found = beside / "shared" / "data" / "pacs-mini"
        return found if (found / "photo").is_dir() else None
    folder = Path(setting).expanduser()
    for candidate in (folder, folder / "pacs-mini"):
        if (candidate / "photo").is_dir():
            return candidate
    raise pytest.UsageError(
        f"VL2V_TEST_DATA={setting}: neither it nor {folder / 'pacs-mini'} holds PACS's domain folders (photo/, "
        "sketch/, ...); give the pacs-mini folder, or VL2V_TEST_DATA=generated for the drawn images"
    )


def need_server(what: str, found: bool, install: str) -> None:
    """Skip a test whose server (PostgreSQL, nginx) is not installed, saying how to install it; under `CI=true`,
    where `.ci/run` installs them, fail instead, so that a missing server never passes CI unseen."""
    if found:
        return
    message = f"{what} is not installed: {install}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: .ci/run installs it)", pytrace=False)
    pytest.skip(message)


REAL_PACS = images_folder(os.environ.get("VL2V_TEST_DATA"), REPO.parent)
TINY = "vl2v-tiny"
KEYS = "alice:sk-alice-secret:10.0,bob:sk-bob-secret:0.0005"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that reads the test images, so CI can run them again on the drawn ones (`-m images`)."""
    for item in items:
        if "pacs_mini" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.images)


def real_images() -> bool:
    return REAL_PACS is not None


class Clock:
    """A monotonic clock a test moves by hand (`clock.now = ...`)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_default_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every vendor a test starts without naming a port gets a free one, never the default 8000, where the README
    invites a user to leave one running."""
    monkeypatch.setenv("VL2V_PORT", str(free_port()))


@pytest.fixture(scope="session")
def pacs_mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 domains x 7 classes x 40 images in DomainBed layout, JPEG and PNG: real when present, drawn otherwise."""
    if real_images():
        return REAL_PACS
    return write_pacs_like(tmp_path_factory.mktemp("pacs-mini"))


@pytest.fixture(scope="session")
def jpeg_bytes(pacs_mini: Path) -> list[bytes]:
    """Eight real JPEG photos."""
    return [p.read_bytes() for p in sorted((pacs_mini / "photo" / "dog").glob("*.jpg"))[:8]]


@pytest.fixture(scope="session")
def png_bytes(pacs_mini: Path) -> bytes:
    return next(iter(sorted((pacs_mini / "sketch" / "dog").glob("*.png")))).read_bytes()


def make_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """Weights for the packaged `vl2v-tiny` architecture, saved as a user's own checkpoint would be."""
    register_packaged_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "vl2v-tiny.safetensors")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session; each test that wants one makes its own database."""
    need_server("PostgreSQL", postgres_bin() is not None, INSTALL)
    with postgres_server(free_port()) as server:
        yield server


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str | None:
    """The billing database `make_settings` names: None (the SQLite file in the state folder) unless a test asks
    for another backend, `@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)`, which gives each
    PostgreSQL run a new database on the session's server."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
def make_settings(tmp_path: Path, tiny_checkpoint: Path, database_url: str | None) -> Callable[..., Settings]:
    def make(**overrides) -> Settings:
        values = dict(
            model=TINY,
            pretrained=str(tiny_checkpoint),
            database_url=database_url,
            state_dir=tmp_path / "state",
            api_keys=KEYS,
            create_billing=True,
            price_per_image=0.0001,
            price_per_1k_tokens=0.02,
            batch_wait_ms=2.0,
        )
        return Settings(_env_file=None, **(values | overrides))

    return make


@dataclass
class LiveService:
    """A running service: its base URL and the state the tests may inspect."""

    url: str
    app: object

    @property
    def state(self):
        return self.app.state.service

    def session(self, key: str = "sk-alice-secret") -> requests.Session:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {key}"
        return s


@contextlib.contextmanager
def run_service(
    settings: Settings, factory: EncoderFactory = load_encoder, wait_ready: bool = True
) -> Iterator[LiveService]:
    """uvicorn on a free loopback port in a background thread: the real HTTP stack, in-process."""
    app = create_app(settings, encoder_factory=factory)
    with serve_app(app, "/health") as url:
        if wait_ready:
            wait_until(lambda: _loaded(url), what="model to load")
        yield LiveService(url, app)


@contextlib.contextmanager
def serve_app(app: object, probe: str = "/") -> Iterator[str]:
    """Any ASGI app under uvicorn on a free loopback port, in a background thread; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url + probe) or _died(thread), what="server to start")
        if not thread.is_alive():
            raise RuntimeError("the server failed to start (see the captured log)")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def wait_until(check: Callable[[], bool], *, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def _died(thread: threading.Thread) -> bool:
    return not thread.is_alive()


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return False
    return True


def _loaded(url: str) -> bool:
    status = requests.get(url + "/health", timeout=2).json()["model"]
    if status == "failed":
        raise RuntimeError(f"the model failed to load: {requests.get(url + '/ready', timeout=2).text}")
    return status == "ready"


@pytest.fixture
def service(make_settings) -> Iterator[LiveService]:
    with run_service(make_settings()) as live:
        yield live
