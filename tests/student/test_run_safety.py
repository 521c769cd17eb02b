"""A careless `distill`: images edited since they were bought, a loss that blows up, a resume with other settings,
an `--out` that already holds results. Each is noticed and said, never trained on or overwritten silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from cli.exit_codes import ERROR
from common.imaging import to_rgb
from student.data import ImageFiles, Sample
from student.methods.erm import ERM

from .test_distill import distill_args, distill_cli, run_cli


def test_distill_leaves_out_and_counts_images_changed_or_missing_since_they_were_bought(
    pacs_cache, pacs_mini, tmp_path
):
    data = tmp_path / "moved"
    shutil.copytree(pacs_mini, data)
    photos = sorted((data / "photo" / "dog").glob("*.jpg"))
    for path, other in zip(photos[:5], photos[10:15], strict=True):
        path.write_bytes(other.read_bytes())  # still a dog photo, but not the one the teacher embedded
    for path in photos[5:7]:
        path.unlink()
    result = distill_cli(pacs_cache, tmp_path / "run", "erm", "--data-dir", str(data))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    changed = summary["changed_since_bought"]
    assert (changed["changed"], changed["missing"]) == (5, 2)
    assert set(changed["examples"]) <= {p.relative_to(data).as_posix() for p in photos[:7]}
    photo = summary["runs"][0]["trained_on"]["photo"]
    assert photo["with_embedding"] < photo["in_split"], "the changed ones have no usable embedding"
    assert 0 <= result["results"][0]["ood_acc"] <= 1


def test_a_non_finite_loss_stops_the_run_with_a_clear_error(pacs_cache, tmp_path, monkeypatch):
    original = ERM.loss
    steps = []

    def exploding(self, batch):
        parts = original(self, batch)
        steps.append(1)
        if len(steps) == 3:
            parts = {k: v * torch.tensor(float("nan")) for k, v in parts.items()}
        return parts

    monkeypatch.setattr(ERM, "loss", exploding)
    code, output = run_cli(*distill_args(pacs_cache, tmp_path / "r", "erm"))
    assert code == ERROR and "erm diverged at step 3 of stage 'train' (loss nan, ce nan)" in output
    assert "Lower the learning rate" in output and "Traceback" not in output
    assert not (tmp_path / "r" / "sketch" / "trial_0" / "model.safetensors").exists()
    records = (tmp_path / "r" / "sketch" / "trial_0" / "results.jsonl").read_text().splitlines()
    assert not any(json.loads(r).get("final") for r in records), "no final record for a broken model"


def test_out_is_never_overwritten_silently_and_resume_refuses_other_settings(pacs_cache, tmp_path):
    first = distill_cli(pacs_cache, tmp_path / "r", "erm")
    results = (tmp_path / "r" / "sketch" / "trial_0" / "results.jsonl").read_text()
    args = distill_args(pacs_cache, tmp_path / "r", "erm")

    code, output = run_cli(*args)
    assert code == ERROR and "already holds a run; pass --resume" in output and "--overwrite" in output
    code, output = run_cli(*args, "--resume", "--lr", "0.001")  # another learning rate
    assert code == ERROR and "was started with other settings" in output and "lr" in output
    code, output = run_cli(*args, "--resume", "--steps", "6")
    assert code == ERROR and "train.steps: 4 -> 6" in output
    assert (tmp_path / "r" / "sketch" / "trial_0" / "results.jsonl").read_text() == results, "left as it was"
    assert [e["resumed"] for e in environments(tmp_path / "r")] == [False], "a refused resume records nothing"

    code, output = run_cli(*args, "--resume", "--json")  # same settings: the finished run, as it was
    assert code == 0 and json.loads(output)["results"] == first["results"]
    assert [e["resumed"] for e in environments(tmp_path / "r")] == [False, True], "each start and resume, in order"
    (tmp_path / "r" / "environment.json").write_text("{not json")
    code, output = run_cli(*args, "--resume")
    assert code == ERROR and "environment.json cannot be read as the run's machine of each start" in output
    code, output = run_cli(*args, "--overwrite", "--json", "--seed", "1")
    assert code == 0 and json.loads((tmp_path / "r" / "config.json").read_text())["config"]["train"]["seed"] == 1
    (started,) = environments(tmp_path / "r")
    assert not started["resumed"] and started["torch"] == torch.__version__
    assert started["torch_threads"] == torch.get_num_threads() and started["cpu"] and started["timm"]

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("months of work")
    code, output = run_cli(*args, "--out", str(tmp_path / "notes"), "--overwrite")
    assert code == ERROR and "is not a vl2v run folder" in output
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "months of work"


def test_export_refuses_to_overwrite_and_writes_exactly_where_it_says(pacs_cache, tmp_path):
    out = tmp_path / "embeddings"  # no .npz suffix: numpy would have added one
    code, output = run_cli("cache", "export", str(pacs_cache), "--out", str(out), "--json")
    assert code == 0 and json.loads(output)["out"] == str(out) and out.is_file()
    assert not (tmp_path / "embeddings.npz").exists()
    before = out.read_bytes()
    code, output = run_cli("cache", "export", str(pacs_cache), "--out", str(out))
    assert code == ERROR and "pass --overwrite" in output and out.read_bytes() == before
    code, _ = run_cli("cache", "export", str(pacs_cache), "--out", str(out), "--overwrite")
    assert code == 0 and np.load(out)["image_embeddings"].shape[0] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings"], "no partial file left behind"


def test_the_student_reads_an_image_file_as_the_teacher_does(tmp_path):
    """A 16-bit PNG is the same picture to the student's loader as to the vendor, not a white square."""
    grey = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    sample = Sample("deep.png", 0, 0, None)
    pixels, _, _, _ = ImageFiles(tmp_path, [sample], T.PILToTensor())[0]
    with Image.open(tmp_path / "deep.png") as image:
        expected = T.PILToTensor()(to_rgb(image))
    assert torch.equal(pixels, expected) and pixels.float().std() > 50


def environments(run: Path) -> list[dict]:
    """The run folder's record of the machine and software of each start or resume."""
    return json.loads((run / "environment.json").read_text())
