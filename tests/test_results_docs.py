"""The result tables of the README and docs/ are rendered from committed results files, never edited by hand."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

from .conftest import REPO


def renderer():
    spec = importlib.util.spec_from_file_location("render_results", REPO / "tools" / "render_results.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_results_table_matches_the_results_file_that_measured_it():
    done = subprocess.run(
        [sys.executable, "tools/render_results.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    blocks = [m for name in renderer().DOCUMENTS for m in renderer().BLOCK.finditer((REPO / name).read_text())]
    assert blocks, "the README's demo table is rendered from docs/results/"
    for block in blocks:
        for name in filter(None, (block["file"], block["other"])):
            record = json.loads((REPO / name).read_text())
            assert record["command"].startswith("python tools/measure_demo.py") and len(record["commit"]) == 40
            for study in record["views"].values() if "views" in record else [record]:
                assert len(study["seeds"]) >= 3, "a claim rests on three seeds at least"


def test_a_number_edited_by_hand_is_caught():
    render = renderer().render
    readme = (REPO / "README.md").read_text()
    edited = re.sub(r"(\| VL2V-ADiP \| [\d.]+ ± [\d.]+ \| )(\d+)", lambda m: m[1] + str(int(m[2]) + 9), readme, count=1)
    assert edited != readme
    assert render(edited) == readme, "rendering puts the measured number back"


def test_a_views_study_renders_its_table_and_its_figure_from_one_file(tmp_path, monkeypatch):
    module = renderer()

    def run(kd: float, adip: float, paid: int) -> dict:
        return {"images_paid": paid, "methods": {"kd": {"ood_acc": kd}, "adip": {"ood_acc": adip}}}

    record = {
        "command": "python tools/measure_demo.py --quick --views 0 4",
        "measured": "2026-12-02",
        "commit": "a" * 40,
        "uncommitted_changes": False,
        "machine": {"cpu": "CPU", "torch_threads": 2, "torch": "2.14.1"},
        "target": "sketch",
        "quick": True,
        "views": {
            "0": {"seeds": {"0": run(0.5, 0.6, 640), "1": run(0.7, 0.8, 640)}},
            "4": {"seeds": {"0": run(0.55, 0.5, 3200), "1": run(0.65, 0.7, 3200)}},
        },
    }
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "study.json").write_text(json.dumps(record))
    monkeypatch.setattr(module, "REPO", tmp_path)
    text = module.render("<!-- results docs/study.json -->\nstale\n<!-- end results -->\n", draw=True)
    lines = text.splitlines()
    assert lines[1] == "| views K | images paid | KD OOD | VL2V-ADiP OOD | every seed |"
    assert lines[3] == "| 0 | 640 | 60.0 ± 10.0 | 70.0 ± 10.0 | KD 50.0 / 70.0; VL2V-ADiP 60.0 / 80.0 |"
    assert lines[4] == "| 4 | 3200 | 60.0 ± 5.0 | 60.0 ± 10.0 | KD 55.0 / 65.0; VL2V-ADiP 50.0 / 70.0 |"
    assert "commit aaaaaaa; CPU, 2 threads, torch 2.14.1" in text
    figure = tmp_path / "docs" / "study.png"
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_the_same_seeds_measured_twice_render_side_by_side_with_how_far_they_moved(tmp_path, monkeypatch):
    module = renderer()

    def record(erm: list[float], adip: list[float], kernels: dict | None = None) -> dict:
        machine = {"cpu": "CPU", "torch_threads": 2, "torch": "2.14.1"} | ({"kernels": kernels} if kernels else {})
        seeds = {
            str(i): {"methods": {"erm": {"ood_acc": e}, "adip": {"ood_acc": a}}}
            for i, (e, a) in enumerate(zip(erm, adip, strict=True))
        }
        return {"command": "python tools/measure_demo.py", "measured": "2026-12-03", "commit": "b" * 40,
                "uncommitted_changes": False, "machine": machine, "seeds": seeds}  # fmt: skip

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.json").write_text(json.dumps(record([0.60, 0.70], [0.65, 0.72])))
    (tmp_path / "docs" / "b.json").write_text(json.dumps(record([0.62, 0.74], [0.66, 0.71], {"OMP_NUM_THREADS": "1"})))
    monkeypatch.setattr(module, "REPO", tmp_path)
    text = module.render("<!-- results docs/a.json vs docs/b.json -->\nstale\n<!-- end results -->\n")
    lines = text.splitlines()
    assert lines[1:5] == ["| seed | ERM | VL2V-ADiP |", "|---|---|---|", "| 0 | 60.0 / 62.0 | 65.0 / 66.0 |",
                          "| 1 | 70.0 / 74.0 | 72.0 / 71.0 |"]  # fmt: skip
    assert "with OMP_NUM_THREADS=1. The same seed moved by 2.0 points on average and 4.0 at most" in text
    assert "changed in 1 of 2 (seed, method) pairs" in text, "seed 1: ADiP above ERM, then below"
    assert "2 threads, OMP_NUM_THREADS=1, torch" in text
