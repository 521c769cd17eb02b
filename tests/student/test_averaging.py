"""SWAD and SMA on hand-made weight and loss sequences."""

from __future__ import annotations

import torch
from torch import nn
from torch.testing import assert_close

from student.averaging import SMA, SWAD, apply_average


def model_at(value: float) -> nn.Module:
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def test_sma_is_the_uniform_mean_of_the_weights_from_its_start_step():
    sma = SMA(start_step=2)
    for step, value in enumerate([10.0, 20.0, 1.0, 2.0, 3.0, 6.0]):
        sma.after_step(model_at(value), step)
    assert_close(sma.averaged(model_at(0))["weight"], torch.tensor([[3.0]]))  # mean of 1, 2, 3, 6
    assert sma.summary()["averaged_steps"] == 4


def run_swad(losses: list[float], steps_per_segment: int = 2, **kw) -> SWAD:
    """Segment i holds the weights i*10+1 .. i*10+steps (mean i*10 + (steps+1)/2), closing with losses[i]."""
    swad = SWAD(**kw)
    step = 0
    for i, loss in enumerate(losses):
        for j in range(steps_per_segment):
            swad.after_step(model_at(i * 10 + j + 1), step)
            step += 1
        swad.after_eval(model_at(0), step, loss)
    return swad


def test_swad_starts_the_valley_at_the_first_minimum_of_n_converge_and_averages_inside_it():
    # segments:        0    1    2    3    4    5    6    7    8    9
    losses = [5.0, 4.0, 3.0, 3.1, 3.2, 3.0, 3.3, 9.0, 9.0, 9.0]
    swad = run_swad(losses, n_converge=3, n_tolerance=2, tolerance_ratio=0.3)
    # Segment 2 is the lowest of (2, 3, 4): the valley starts there; threshold = mean(3, 3.1, 3.2) * 1.3.
    assert swad.converge_step == 6 and abs(swad.threshold - 3.1 * 1.3) < 1e-9
    # Segments 3..6 are each followed by a window whose best loss stays under 4.03; at segment 7 the window (7, 8)
    # has only 9s: the valley ends, and 7.. are never added.
    assert swad.dead
    expected = sum(i * 10 + 1.5 for i in (2, 3, 4, 5, 6)) / 5
    assert_close(swad.averaged(model_at(0))["weight"], torch.tensor([[expected]]))


def test_swad_that_never_converged_returns_the_last_segment():
    swad = run_swad([5.0, 4.0, 3.0, 2.0], n_converge=3, n_tolerance=6)
    assert swad.converge_step is None
    assert_close(swad.averaged(model_at(0))["weight"], torch.tensor([[31.5]]))


def test_a_run_ending_inside_the_valley_adds_what_stays_under_the_threshold():
    swad = run_swad([3.0, 3.0, 3.0, 3.0, 3.0], n_converge=3, n_tolerance=6, tolerance_ratio=0.3)
    assert not swad.dead and swad.converge_step == 2
    assert_close(swad.averaged(model_at(0))["weight"], torch.tensor([[sum(i * 10 + 1.5 for i in range(5)) / 5]]))


def test_apply_average_loads_parameters_only():
    m = nn.BatchNorm1d(1)
    m.running_mean.fill_(7.0)
    apply_average(m, {"weight": torch.tensor([2.0]), "bias": torch.tensor([3.0])})
    assert m.weight.item() == 2.0 and m.bias.item() == 3.0 and m.running_mean.item() == 7.0
