"""The shared math, against values computed by hand."""

from __future__ import annotations

import math

import torch
from torch.testing import assert_close

from student.blocks import TextHead, cosine_distill, cosine_logits, kd_loss, prompt_embedding


def test_cosine_distillation_is_one_minus_cosine_averaged():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    assert_close(cosine_distill(a, b), torch.tensor(((1 - 24 / 25) + 1.0) / 2))
    assert_close(cosine_distill(a, a), torch.tensor(0.0), atol=1e-7, rtol=0)


def test_kd_matches_the_textbook_formula():
    teacher = torch.tensor([[0.0, math.log(3.0)]])  # softmax -> (1/4, 3/4)
    student = torch.tensor([[0.0, 0.0]])  # softmax -> (1/2, 1/2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert_close(kd_loss(teacher, student, temperature=1.0), torch.tensor(expected))
    # T = 2: probabilities of z / 2, times T^2.
    p = torch.tensor([1.0, math.sqrt(3.0)]) / (1 + math.sqrt(3.0))
    expected_t2 = 4 * float((p * (p / 0.5).log()).sum())
    assert_close(kd_loss(teacher, student, temperature=2.0), torch.tensor(expected_t2))


def test_kd_is_zero_for_identical_logits():
    z = torch.randn(5, 7)
    assert_close(kd_loss(z, z.clone(), temperature=3.0), torch.tensor(0.0), atol=1e-6, rtol=0)


def test_text_head_is_scaled_cosine_to_the_class_texts():
    classes = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    head = TextHead(classes, scale=100.0)
    v = torch.tensor([[1.0, 1.0]])
    assert_close(head(v), torch.tensor([[100 / math.sqrt(2), 100 / math.sqrt(2)]]))
    assert_close(cosine_logits(v, classes, 10.0), torch.tensor([[10 / math.sqrt(2), 10 / math.sqrt(2)]]))
    assert list(head.parameters()) == [], "nothing of it trains"
    assert_close(head.scale, torch.tensor(100.0))


def test_prompt_embedding_normalises_averages_and_normalises_again():
    texts = {"a": torch.tensor([2.0, 0.0]), "b": torch.tensor([0.0, 5.0])}
    assert_close(prompt_embedding(texts, ["a", "b"]), torch.tensor([1.0, 1.0]) / math.sqrt(2))
