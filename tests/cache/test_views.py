"""Augmented views, bought once: each a paid image of its own, priced into the budget, resumable, and shown to the
student as exactly the pixels the vendor was sent."""

from __future__ import annotations

import base64
import io
import json
import shutil
import signal

import numpy as np
import pytest
from PIL import Image

from cache.store import EmbeddingCache
from cache.views import apply_view, render_view, view_params

from ..conftest import run_service, wait_until
from ..query_runs import RewritingProxy, assert_paid_once, paid_images, slow_encoder, spawn_query
from .test_query import CAROL, cli, query


def small_folder(pacs_mini, tmp_path, per_class: int = 3):
    """An image folder: 2 domains x 2 classes x `per_class` real images."""
    data = tmp_path / "folder"
    for domain in ("photo", "sketch"):
        for name in ("dog", "horse"):
            (data / domain / name).mkdir(parents=True)
            for image in sorted((pacs_mini / domain / name).iterdir())[:per_class]:
                shutil.copy(image, data / domain / name / image.name)
    return data


def folder_args(data, cache, *extra):
    return ["--dataset", "imagefolder", "--data-dir", str(data), "--cache", str(cache), *extra]


@pytest.fixture
def vendor(make_settings):
    with run_service(make_settings(api_keys=CAROL)) as service:
        yield service


def test_view_parameters_are_a_pure_function_of_the_image_and_view_number():
    assert view_params("ab" * 32, 3) == view_params("ab" * 32, 3)
    assert view_params("ab" * 32, 3) != view_params("ab" * 32, 4) != view_params("cd" * 32, 3)
    drawn = [view_params(f"{i:064x}", 1) for i in range(400)]
    assert 0.4 < np.mean([p.flip for p in drawn]) < 0.6 and 0.05 < np.mean([p.grayscale for p in drawn]) < 0.15
    for p in drawn:
        left, top, width, height = p.box
        assert 0.7 - 1e-9 <= width * height <= 1.0 + 1e-9 and left + width <= 1 + 1e-9 and top + height <= 1 + 1e-9
        assert sorted(p.order) == [0, 1, 2, 3] and abs(p.hue) <= 0.3


def test_a_view_rendered_for_the_teacher_and_replayed_for_the_student_is_the_same_image(pacs_mini):
    """Crops, flips and colour changes alike: the student's view at its size equals the sent view resized."""
    photo = Image.open(sorted((pacs_mini / "photo" / "dog").glob("*.jpg"))[0]).convert("RGB")
    kinds = {"flipped": False, "greyed": False, "cropped": False}
    for number in range(1, 40):
        params = view_params("photo-dog-0", number)
        sent = Image.open(io.BytesIO(render_view(photo, params, 224)))  # what the vendor decodes
        student = np.asarray(apply_view(photo, params, 64), dtype=float)
        seen = np.asarray(sent.resize((64, 64), Image.Resampling.BOX), dtype=float)
        assert np.abs(student - seen).mean() < 3.0, (number, np.abs(student - seen).mean())
        kinds["flipped"] |= params.flip
        kinds["greyed"] |= params.grayscale
        kinds["cropped"] |= params.box[2] * params.box[3] < 0.85
    assert all(kinds.values()), kinds
    params = view_params("photo-dog-0", 1)
    flipped = params.__class__(**(params.__dict__ | {"flip": not params.flip}))
    a, b = apply_view(photo, params, 64), apply_view(photo, flipped, 64)
    assert np.array_equal(np.asarray(a), np.asarray(b)[:, ::-1]), "a flip is its own view, not a flipped embedding"


def test_the_budget_counts_views_as_the_paid_images_they_are(vendor, pacs_mini, tmp_path):
    data = small_folder(pacs_mini, tmp_path)  # 12 files
    code, plan = query(vendor, *folder_args(data, tmp_path / "c", "--views", "2", "--budget", "15", "--dry-run"))
    assert code == 0 and plan["to_buy"] == 15, plan
    code, report = query(vendor, *folder_args(data, tmp_path / "c", "--views", "2", "--budget", "15"))
    assert code == 0 and report["paid_images"] == 15 and paid_images(vendor.state.store.ledger()) == 15
    with EmbeddingCache.open(tmp_path / "c") as cache:
        assert (cache.counts()["image"], cache.counts()["views"]) == (5, 10), "each file before its views"
    code, info = cli("cache", "info", str(tmp_path / "c"), "--json")
    assert json.loads(info)["views"] == 10 and json.loads(info)["paid_images"] == 15
    assert cli("cache", "verify", str(tmp_path / "c"))[0] == 0


def test_raising_k_later_buys_only_the_new_views(vendor, pacs_mini, tmp_path):
    data = small_folder(pacs_mini, tmp_path)
    assert query(vendor, *folder_args(data, tmp_path / "c", "--views", "1"))[0] == 0
    assert paid_images(vendor.state.store.ledger()) == 24
    code, report = query(vendor, *folder_args(data, tmp_path / "c", "--views", "3"))
    assert code == 0 and report["paid_images"] == 24, "two more views of each of 12 files, nothing else"
    code, again = query(vendor, *folder_args(data, tmp_path / "c", "--views", "3"))
    assert again["paid_images"] == 0
    assert assert_paid_once(tmp_path / "c", vendor.state.store.ledger()) == 12 * 4


def test_the_pixels_the_vendor_was_sent_are_the_view_the_student_replays(vendor, pacs_mini, tmp_path):
    from student.data import ImageFiles, Replay, Sample
    from student.knowledge import TeacherKnowledge

    data = small_folder(pacs_mini, tmp_path, per_class=1)
    proxy = RewritingProxy(vendor.url, lambda path, status, headers, body: (status, headers, body))
    try:
        assert query(proxy, *folder_args(data, tmp_path / "c", "--views", "2"))[0] == 0
    finally:
        proxy.close()
    sent = [
        item["image"]
        for body in proxy.bodies
        for item in json.loads(body).get("input", [])
        if isinstance(item, dict) and item.get("type") == "image"
    ]
    size = int(vendor.state.teacher.encoder.info.image_size[0])
    pictures = [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))) for u in sent]
    views = [p for p in pictures if p.size == (size, size) and p.format == "PNG"]  # the files are larger
    assert len(views) == 8, "two views of each of 4 files, rendered at the teacher's resolution"
    with EmbeddingCache.open(tmp_path / "c") as cache:
        knowledge = TeacherKnowledge.from_cache(cache)
        paths = {k: p[0] for k, p in cache.items()}
    for key, numbered in knowledge.views.items():
        sample = Sample(paths[key], 0, 0, key, tuple(row for _, row in numbered))
        files = ImageFiles(data, [sample], None, Replay(knowledge.view_params, size))
        for seed in range(len(numbered)):
            pixels, _, _, row = files[(0, seed)]
            replayed = pixels.permute(1, 2, 0).numpy().astype(float)
            assert any(np.abs(replayed - np.asarray(v, dtype=float)).max() <= 1 for v in views), (key, row)


def test_a_run_killed_mid_views_resumes_paying_once_per_view(make_settings, pacs_mini, tmp_path):
    with run_service(make_settings(api_keys=CAROL), slow_encoder(0.03)) as vendor:
        process = spawn_query(
            vendor.url, pacs_mini, tmp_path / "c", "--views", "2", "--budget", "300", "--batch-size", "6"
        )
        wait_until(lambda: paid_images(vendor.state.store.ledger()) >= 60, what="some views paid", timeout=120)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        process = spawn_query(
            vendor.url, pacs_mini, tmp_path / "c", "--views", "2", "--budget", "300", "--batch-size", "6"
        )
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        ledger = vendor.state.store.ledger()
    assert paid_images(ledger) == 300
    with EmbeddingCache.open(tmp_path / "c") as cache:
        assert (cache.counts()["image"], cache.counts()["views"]) == (100, 200)
    assert cli("cache", "verify", str(tmp_path / "c"))[0] == 0
