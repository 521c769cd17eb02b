"""A pacs-mini cache bought once per session from the real (tiny) teacher service."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache.client import TeacherClient
from cache.query import QueryConfig, run_query
from teacher_service.settings import Settings

from ..conftest import TINY, run_service


@pytest.fixture(scope="session")
def pacs_cache(tmp_path_factory, tiny_checkpoint, pacs_mini) -> Path:
    root = tmp_path_factory.mktemp("pacs-cache")
    settings = Settings(
        _env_file=None,
        model=TINY,
        pretrained=str(tiny_checkpoint),
        state_dir=root / "state",
        api_keys="t:sk-t:1000",
        create_billing=True,
    )
    with run_service(settings) as service:
        run_query(
            QueryConfig(dataset="pacs", data_dir=pacs_mini, cache_dir=root / "cache"),
            TeacherClient(service.url, "sk-t"),
        )
    return root / "cache"


@pytest.fixture(scope="session")
def views_cache(tmp_path_factory, tiny_checkpoint, pacs_mini) -> Path:
    """pacs-mini with two augmented views of each of 300 images (900 paid images)."""
    root = tmp_path_factory.mktemp("views-cache")
    settings = Settings(
        _env_file=None,
        model=TINY,
        pretrained=str(tiny_checkpoint),
        state_dir=root / "state",
        api_keys="t:sk-t:1000",
        create_billing=True,
    )
    with run_service(settings) as service:
        run_query(
            QueryConfig(dataset="pacs", data_dir=pacs_mini, cache_dir=root / "cache", views=2, budget=900),
            TeacherClient(service.url, "sk-t"),
        )
    return root / "cache"
