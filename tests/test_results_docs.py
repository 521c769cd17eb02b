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
        record = json.loads((REPO / block["file"]).read_text())
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
