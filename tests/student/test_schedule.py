"""The learning-rate schedules: DomainBed's constant rate (with RISE's step), and cosine with a linear warmup."""

from __future__ import annotations

import math

import pytest

from cache.errors import InvalidOption
from student.methods import get_method
from student.trainer import lr_factor


def hparams(method: str = "erm", **overrides: str):
    return get_method(method).Hparams.with_overrides(overrides)


def test_constant_is_one_and_the_step_decay_multiplies_by_a_tenth_from_its_step():
    assert [lr_factor(hparams(), s, 10) for s in (0, 9)] == [1.0, 1.0]
    rise = hparams("rise")  # lr x0.1 after 80% of the steps, as the official code after epoch 16 of 20
    assert [lr_factor(rise, s, 10) for s in (7, 8, 9)] == [1.0, 0.1, 0.1]


def test_cosine_falls_from_one_to_zero_after_a_linear_warmup():
    cosine = hparams(lr_schedule="cosine")
    factors = [lr_factor(cosine, s, 100) for s in range(100)]
    assert factors[0] == 1.0 and factors[50] == pytest.approx(0.5) and factors[99] == pytest.approx(0.00025, abs=1e-4)
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))
    warm = hparams(lr_schedule="cosine", warmup="0.1")
    assert [lr_factor(warm, s, 100) for s in range(10)] == pytest.approx([(s + 1) / 11 for s in range(10)])
    assert lr_factor(warm, 10, 100) == 1.0 and lr_factor(warm, 55, 100) == pytest.approx(
        0.5 * (1 + math.cos(math.pi / 2))
    )


def test_a_schedule_is_checked_and_a_step_decay_is_refused_beside_cosine():
    with pytest.raises(InvalidOption, match="lr_schedule must be one of"):
        hparams(lr_schedule="linear")
    with pytest.raises(InvalidOption, match="set lr_decay_at=none with lr_schedule=cosine"):
        hparams("rise", lr_schedule="cosine")
    assert hparams("rise", lr_schedule="cosine", lr_decay_at="none").lr_decay_at is None
    with pytest.raises(InvalidOption, match="warmup must be in"):
        hparams(warmup="1.5")
