"""Distilling from cached views: each training sample shows one of its views, chosen by the seed and the step,
and learns from that view's embedding; `--views 0` keeps the clean image's."""

from __future__ import annotations

import json

import torch

from student import data as student_data
from student.methods.kd import KD
from student.run import distill

from .test_distill import tiny_config


def spy(monkeypatch) -> tuple[list, list]:
    shown, taught = [], []
    original = student_data.ImageFiles.__getitem__

    def getitem(self, index):
        result = original(self, index)
        if isinstance(index, tuple):
            shown.append((self.samples[index[0]].key, result[3]))
        return result

    loss = KD.loss

    def recording(self, batch):
        taught.append(batch["teacher_image"].clone())
        return loss(self, batch)

    monkeypatch.setattr(student_data.ImageFiles, "__getitem__", getitem)
    monkeypatch.setattr(KD, "loss", recording)
    return shown, taught


def test_each_sample_replays_one_of_its_views_and_learns_that_views_embedding(views_cache, tmp_path, monkeypatch):
    shown, taught = spy(monkeypatch)
    config = tiny_config(views_cache, tmp_path / "r", "kd", "sketch", steps=3, eval_every=3, batch_size=4)
    distill(config)
    described = json.loads((tmp_path / "r" / "config.json").read_text())
    assert described["cached_views"] == 600
    from cache.store import EmbeddingCache
    from student.knowledge import TeacherKnowledge

    with EmbeddingCache.open(views_cache) as cache:
        knowledge = TeacherKnowledge.from_cache(cache)
    assert len(shown) == 3 * 4 * 3 and all(row >= len(knowledge.index) for _, row in shown), "views, not clean"
    assert all(row in {r for _, r in knowledge.views[key]} for key, row in shown), "each its own image's views"
    first_batch = torch.stack([knowledge.image_embeddings[row] for _, row in shown[:12]])
    torch.testing.assert_close(taught[0], first_batch), "the student learns from the view it sees"
    numbers = {number for key, row in shown for number, r in knowledge.views[key] if r == row}
    assert numbers == {1, 2}, "the seed picks among an image's views"


def test_views_0_keeps_the_clean_images_embedding(views_cache, tmp_path, monkeypatch):
    shown, _ = spy(monkeypatch)
    config = tiny_config(views_cache, tmp_path / "r", "kd", "sketch", steps=2, eval_every=2, batch_size=4)
    distill(config.__class__(**(config.__dict__ | {"views": 0})))
    assert shown and all(row == -1 for _, row in shown)
