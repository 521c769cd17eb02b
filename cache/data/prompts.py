"""Every text prompt a registered method reads, so that one query buys them all (docs/methods.md)."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import InvalidOption

# Template sets, by the name the methods use to look them up.
TEMPLATES: dict[str, tuple[str, ...]] = {
    # VL2V-ADiP, VL2V-SD, KD and zero-shot: CLIP's plain prompt.
    "photo": ("a photo of a {}",),
    # SCMD (TMLR 2024).
    "scmd": ("this is a photo of a {}",),
    # RISE's class embedding: the mean over these seven (ICCV 2023, official code).
    "rise": (
        "itap of a {}.",
        "a bad photo of the {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    ),
}
ANCHOR_TEMPLATE = "a {anchor} of a {name}"


def class_prompts(template_set: str, class_name: str) -> list[str]:
    """The prompts whose normalised mean is `class_name`'s embedding under `template_set`."""
    if template_set not in TEMPLATES:
        raise InvalidOption(f"unknown template set {template_set!r}; known: {', '.join(sorted(TEMPLATES))}")
    return [t.format(class_name) for t in TEMPLATES[template_set]]


def anchor_prompt(anchor: str, class_name: str) -> str:
    """RISE's anchor prompt, e.g. "a sketch of a dog"."""
    return ANCHOR_TEMPLATE.format(anchor=anchor, name=class_name)


def all_prompts(class_names: Iterable[str], anchors: Iterable[str]) -> list[str]:
    """Every prompt of every template set for every class, plus every anchor x class; sorted, unique."""
    names, anchors = list(class_names), list(anchors)
    prompts = {p for template_set in TEMPLATES for name in names for p in class_prompts(template_set, name)}
    prompts |= {anchor_prompt(a, n) for a in anchors for n in names}
    return sorted(prompts)
