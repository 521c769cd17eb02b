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
        assert len(record["seeds"]) >= 3, "a claim rests on three seeds at least"


def test_a_number_edited_by_hand_is_caught():
    render = renderer().render
    readme = (REPO / "README.md").read_text()
    edited = re.sub(r"(\| VL2V-ADiP \| [\d.]+ ± [\d.]+ \| )(\d+)", lambda m: m[1] + str(int(m[2]) + 9), readme, count=1)
    assert edited != readme
    assert render(edited) == readme, "rendering puts the measured number back"
