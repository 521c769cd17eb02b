"""The model card beside an export: what the student is, what it was distilled from, how well it did, what it cost.

Written as a Hugging Face model card (YAML front matter, then Markdown), so the timm folder's `README.md` is the
card the Hub shows.
"""

from __future__ import annotations

import sys

from ..environment import describe
from .run_folder import TrainedRun


def model_card(run: TrainedRun, *, title: str, loading: str, checks: list[str]) -> str:
    """The card's text; `loading` is a code block showing how to use this format, `checks` the export's checks."""
    meta, final, described = run.meta, run.final, run.described
    teacher = described.get("teacher", {})
    train = described.get("config", {}).get("train", {})
    method = type(run.method)
    paper = (sys.modules[method.__module__].__doc__ or method.name).strip().splitlines()[0]
    sources = [d for i, d in enumerate(meta["domains"]) if i not in final["args"]["test_envs"]]
    paid = described.get("cached_images")
    views = described.get("cached_views") or 0
    lines = [
        "---",
        "library_name: timm",
        "pipeline_tag: image-classification",
        "tags: [vl2v, knowledge-distillation, domain-generalization, clip]",
        "---",
        "",
        f"# {title}",
        "",
        f"A {meta['student']} image classifier over {len(meta['classes'])} classes of `{meta['dataset']}`, "
        f"distilled by vl2v from a CLIP teacher that was only reachable as a paid embedding API.",
        "",
        "| | |",
        "|---|---|",
        f"| teacher | `{teacher.get('id')}` (weights fingerprint `{str(teacher.get('fingerprint'))[:16]}`) |",
        f"| method | `{meta['method']}`: {paper} |",
        f"| student | `{meta['student']}` from `{meta.get('student_weights') or 'random weights'}`, "
        f"{meta['image_size']} px |",
        f"| data | `{meta['dataset']}`: trained on {', '.join(sources)}; `{run.target}` held out |",
        f"| in-domain accuracy | {100 * final['source_val_acc']:.1f}% (the source domains' validation splits) |",
        f"| out-of-domain accuracy | {100 * final['target_acc']:.1f}% (all of `{run.target}`, never trained on) |",
        f"| teacher queries paid | {paid} images" + (f" and {views} augmented views" if views else "") + " |",
        f"| training | {train.get('steps')} steps per stage, seed {train.get('seed')} |",
        *[f"| trained on | {machine} |" for machine in _machines(run.environments)],
        "",
        f"Classes, in logit order: {', '.join(meta['classes'])}.",
        "",
        "## Preprocessing",
        "",
        f"RGB, resized to {meta['image_size']}x{meta['image_size']} with bilinear interpolation and no crop "
        f"(the aspect ratio is not kept), scaled to [0, 1], then normalised with mean {_floats(meta['mean'])} "
        f"and std {_floats(meta['std'])}.",
        "",
        "## Use",
        "",
        loading,
        "",
        "## Checks at export",
        "",
        *[f"- {c}" for c in checks],
        "",
        "## Limitations",
        "",
        "Accuracy is measured on the run's own images only. A student distilled from a demo or a small teacher "
        "inherits that teacher's blind spots; check it on your own images (`vl2v evaluate`) before you deploy it.",
    ]
    return "\n".join(lines) + "\n"


def _machines(environments: list[dict]) -> list[str]:
    """Each machine the run computed on, once, in order: a resumed run may have moved."""
    return list(dict.fromkeys(describe(e) for e in environments))


def _floats(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
