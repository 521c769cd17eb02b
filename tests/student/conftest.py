"""A pacs-mini cache bought once per session from the real (tiny) teacher service."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache.client import TeacherClient
from cache.query import QueryConfig, run_query
from teacher_service.settings import Settings

from ..conftest import TINY, run_service


def bought_cache(root: Path, tiny_checkpoint: Path, pacs_mini: Path, **query) -> Path:
    """pacs-mini bought from the tiny teacher service into `root/cache` (QueryConfig options in `query`)."""
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
            QueryConfig(dataset="pacs", data_dir=pacs_mini, cache_dir=root / "cache", **query),
            TeacherClient(service.url, "sk-t"),
        )
    return root / "cache"


@pytest.fixture(scope="session")
def pacs_cache(tmp_path_factory, tiny_checkpoint, pacs_mini) -> Path:
    return bought_cache(tmp_path_factory.mktemp("pacs-cache"), tiny_checkpoint, pacs_mini)


@pytest.fixture(scope="session")
def views_cache(tmp_path_factory, tiny_checkpoint, pacs_mini) -> Path:
    """pacs-mini with two augmented views of each of 300 images (900 paid images)."""
    return bought_cache(tmp_path_factory.mktemp("views-cache"), tiny_checkpoint, pacs_mini, views=2, budget=900)
