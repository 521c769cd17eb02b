"""How an export's answers compare with the run folder's student on the same images."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass(frozen=True)
class Agreement:
    """The comparison's outcome."""

    images: int
    largest_difference: float  # max |logit_export - logit_torch| over every image and class
    top1_agreement: float  # fraction of images whose top-1 class is the same
    accuracy: dict[str, dict[str, float]]  # {"torch"|"export": {"id": .., "ood": ..}}

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "largest_logit_difference": self.largest_difference,
            "top1_agreement": self.top1_agreement,
            "accuracy": self.accuracy,
        }


@dataclass
class Tally:
    """Batches of (the run's logits, the export's logits, labels) by role ("id" or "ood"), summed into an
    `Agreement`."""

    largest: float = 0.0
    agree: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    correct: dict[str, dict[str, int]] = field(default_factory=lambda: {"torch": {}, "export": {}})

    def add(self, role: str, expected: Tensor, got: Tensor, labels: Tensor) -> None:
        self.largest = max(self.largest, float((expected - got).abs().max()))
        self.agree += int((expected.argmax(1) == got.argmax(1)).sum())
        self.counts[role] = self.counts.get(role, 0) + len(labels)
        for name, logits in (("torch", expected), ("export", got)):
            hits = int((logits.argmax(1) == labels).sum())
            self.correct[name][role] = self.correct[name].get(role, 0) + hits

    def result(self) -> Agreement:
        total = sum(self.counts.values())
        accuracy = {
            name: {role: hits / self.counts[role] for role, hits in by_role.items()}
            for name, by_role in self.correct.items()
        }
        return Agreement(total, self.largest, self.agree / max(total, 1), accuracy)
