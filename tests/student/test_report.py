"""`vl2v report` counts what was measured: a trial once however often its run is named or copied, and runs with
other settings in rows of their own."""

from __future__ import annotations

import shutil

import pytest

from cli.exit_codes import ERROR

from .test_distill import distill_cli, run_cli


def report(tmp_path, *runs) -> str:
    code, output = run_cli(
        "report", *map(str, runs), "--out", str(tmp_path / "r.md"), "--chart", str(tmp_path / "r.png")
    )
    assert code == 0, output
    return (tmp_path / "r.md").read_text()


def test_a_run_named_twice_or_copied_counts_once(pacs_cache, tmp_path):
    first = distill_cli(pacs_cache, tmp_path / "run1", "erm")["results"][0]["ood_acc"]
    shutil.copytree(tmp_path / "run1", tmp_path / "copy-of-run1")
    table = report(tmp_path, tmp_path / "run1", tmp_path / "run1", tmp_path / "copy-of-run1")
    assert f"| erm | {100 * first:.1f} (n=1) |" in table, table
    assert table.count("is the same trial as") == 2 and "copy-of-run1: sketch trial 0" in table


def test_runs_with_other_settings_are_never_pooled_and_other_seeds_are(pacs_cache, tmp_path):
    distill_cli(pacs_cache, tmp_path / "seed0", "erm")
    distill_cli(pacs_cache, tmp_path / "seed1", "erm", "--seed", "1", "--trial", "1")
    distill_cli(pacs_cache, tmp_path / "longer", "erm", "--steps", "6")
    table = report(tmp_path, tmp_path / "seed0", tmp_path / "seed1", tmp_path / "longer")
    rows = [line for line in table.splitlines() if line.startswith("| erm")]
    assert len(rows) == 2, table
    assert any("train.steps=4" in row and "(n=2)" in row for row in rows), "the two seeds pool into one cell"
    assert any("train.steps=6" in row and "(n=1)" in row for row in rows), "the longer run is a row of its own"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("summary.json", "summary.json cannot be read as the summary of a finished `vl2v distill --out` folder"),
        ("config.json", "config.json cannot be read as a vl2v run folder's config.json"),
        ("sketch/trial_0/results.jsonl", "results.jsonl, line 2, is not a DomainBed record"),
    ],
)
def test_a_damaged_summary_config_or_record_is_one_line_naming_the_file(pacs_cache, tmp_path, damage, message):
    distill_cli(pacs_cache, tmp_path / "run", "erm")
    damaged = tmp_path / "run" / damage
    damaged.write_text(damaged.read_text()[: len(damaged.read_text()) // 2] + "\n{not json")
    command = ["report", str(tmp_path / "run"), "--out", str(tmp_path / "r.md"), "--chart", str(tmp_path / "r.png")]
    code, output = run_cli(*command, *(["--selection", "iid"] if damage.endswith(".jsonl") else []))
    assert code == ERROR and message in output and "Traceback" not in output, output
    assert len(output.strip().splitlines()) == 1, output
