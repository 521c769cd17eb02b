"""Weight averaging: SWAD (dense averaging inside the loss valley) and SMA (uniform average from a step on).

Both keep float32 copies of the trainable parameters on the CPU; buffers (frozen BatchNorm statistics) come from
the live model when the average is applied.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from .methods.base import Hparams

State = dict[str, Tensor]


def snapshot(model: nn.Module) -> State:
    """A float32 CPU copy of the model's parameters."""
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}


class _Mean:
    """A running uniform mean of parameter states."""

    def __init__(self) -> None:
        self.state: State | None = None
        self.count = 0

    def add(self, state: State, weight: int = 1) -> None:
        if self.state is None:
            self.state = {k: v.clone() for k, v in state.items()}
        else:
            for k, v in state.items():
                self.state[k] += (v - self.state[k]) * (weight / (self.count + weight))
        self.count += weight

    def state_dict(self) -> dict:
        return {"state": self.state, "count": self.count}

    def load_state_dict(self, saved: dict) -> None:
        self.state, self.count = saved["state"], saved["count"]


def apply_average(model: nn.Module, state: State) -> None:
    """Load averaged parameters into `model` (buffers untouched)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in state:
                param.copy_(state[name].to(param.device, param.dtype))


class SMA:
    """Simple moving average (SCMD, after Arpit et al. 2022): the uniform mean of every step's weights from
    `start_step` on. Until then it is the current weights."""

    def __init__(self, start_step: int = 300) -> None:
        self.start_step = start_step
        self._mean = _Mean()

    def after_step(self, model: nn.Module, step: int) -> None:
        if step >= self.start_step:
            self._mean.add(snapshot(model))

    def after_eval(self, model: nn.Module, step: int, val_loss: float) -> None:
        return None

    def averaged(self, model: nn.Module) -> State:
        return self._mean.state if self._mean.state is not None else snapshot(model)

    def summary(self) -> dict:
        return {"averaging": "sma", "averaged_steps": self._mean.count, "start_step": self.start_step}

    def state_dict(self) -> dict:
        return self._mean.state_dict()

    def load_state_dict(self, saved: dict) -> None:
        self._mean.load_state_dict(saved)


@dataclass
class _Segment:
    """The mean weights of the steps between two evaluations, and the source-validation loss at its end."""

    state: State
    end_step: int
    loss: float


class SWAD:
    """SWAD (Cha et al., NeurIPS 2021): average the per-segment mean weights that lie in the validation-loss valley.

    Each evaluation closes a segment (the mean weights of the steps since the previous one) with its source-
    validation loss. The valley starts at the first segment that has the lowest loss of the `n_converge` segments
    from it on; the threshold is their mean loss times (1 + `tolerance_ratio`). A later segment joins the average
    while the best loss of the `n_tolerance` segments from it on stays under the threshold; the first time it does
    not, the valley has ended and nothing more is added.
    """

    def __init__(self, n_converge: int = 3, n_tolerance: int = 6, tolerance_ratio: float = 0.3) -> None:
        self.n_converge, self.n_tolerance, self.tolerance_ratio = n_converge, n_tolerance, tolerance_ratio
        self._segment = _Mean()
        self._window: deque[_Segment] = deque(maxlen=n_converge)  # before convergence
        self._pending: list[_Segment] = []  # after convergence, not yet judged
        self._final = _Mean()
        self.converge_step: int | None = None
        self.threshold: float | None = None
        self.dead = False

    def after_step(self, model: nn.Module, step: int) -> None:
        if not self.dead:
            self._segment.add(snapshot(model))

    def after_eval(self, model: nn.Module, step: int, val_loss: float) -> None:
        if self.dead or self._segment.state is None:
            return
        segment = _Segment(self._segment.state, step, val_loss)
        self._segment = _Mean()
        if self.threshold is None:  # not converged yet
            self._window.append(segment)
            losses = [s.loss for s in self._window]
            if len(losses) == self.n_converge and min(losses) == losses[0]:
                self.converge_step = self._window[0].end_step
                self.threshold = sum(losses) / len(losses) * (1 + self.tolerance_ratio)
                self._final.add(self._window[0].state)
                self._pending = list(self._window)[1:]
            return
        self._pending.append(segment)
        while len(self._pending) >= self.n_tolerance:
            if min(s.loss for s in self._pending[: self.n_tolerance]) > self.threshold:
                self.dead, self._pending = True, []
                return
            self._final.add(self._pending.pop(0).state)

    def averaged(self, model: nn.Module) -> State:
        if self._final.state is None or self.threshold is None:  # never converged (a short run)
            return self._window[-1].state if self._window else snapshot(model)  # the last segment, as SWAD does
        final = _Mean()
        final.state, final.count = {k: v.clone() for k, v in self._final.state.items()}, self._final.count
        for i, segment in enumerate(self._pending):  # the run ended inside the valley: judge what is left
            if min(s.loss for s in self._pending[i:]) > self.threshold:
                break
            final.add(segment.state)
        return final.state

    def summary(self) -> dict:
        return {
            "averaging": "swad",
            "converge_step": self.converge_step,
            "threshold": self.threshold,
            "segments_averaged": self._final.count,
            "valley_ended": self.dead,
        }

    def state_dict(self) -> dict:
        """Tensors and plain values only (a resume checkpoint stores data, never objects)."""
        return {
            "segment": self._segment.state_dict(),
            "window": [asdict(s) for s in self._window],
            "pending": [asdict(s) for s in self._pending],
            "final": self._final.state_dict(),
            "converge_step": self.converge_step,
            "threshold": self.threshold,
            "dead": self.dead,
        }

    def load_state_dict(self, saved: dict) -> None:
        self._segment.load_state_dict(saved["segment"])
        self._window = deque((_Segment(**s) for s in saved["window"]), maxlen=self.n_converge)
        self._pending = [_Segment(**s) for s in saved["pending"]]
        self._final.load_state_dict(saved["final"])
        self.converge_step, self.threshold, self.dead = saved["converge_step"], saved["threshold"], saved["dead"]


class NoAveraging:
    """The weights at the best source-validation step (DomainBed's training-domain validation)."""

    def after_step(self, model: nn.Module, step: int) -> None:
        return None

    def after_eval(self, model: nn.Module, step: int, val_loss: float) -> None:
        return None

    def averaged(self, model: nn.Module) -> State:
        return snapshot(model)

    def summary(self) -> dict:
        return {"averaging": "none"}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, saved: dict) -> None:
        return None


Averager = SWAD | SMA | NoAveraging


def averager(kind: str, h: Hparams) -> Averager:
    """The weight averaging a stage asked for (`Stage.averaging`), with the method's hyper-parameters."""
    if kind == "swad":
        return SWAD(h.swad_n_converge, h.swad_n_tolerance, h.swad_tolerance_ratio)
    if kind == "sma":
        return SMA(h.sma_start)
    return NoAveraging()
