"""`vl2v export`: the student as ONNX and as a timm folder, checked against the run, used by predict and evaluate,
loaded by timm without vl2v, described by its card; and every bad input as one line with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cli.exit_codes import ERROR
from common.imaging import to_rgb
from student.checkpoint import load_student
from student.data import Normalize, eval_transform
from student.deploy.run_folder import check_images, open_run

from .test_distill import distill_cli, run_cli

METHODS = ("erm", "kd", "rise", "scmd", "adip")


@pytest.fixture(scope="module")
def runs(pacs_cache, tmp_path_factory) -> Path:
    """A few steps of every black-box method on pacs-mini (test_resnet at 32 px), sketch held out."""
    root = tmp_path_factory.mktemp("export-runs")
    for method in METHODS:
        distill_cli(pacs_cache, root / method, method)
    return root


def export(run: Path, fmt: str, out: Path, *extra: str) -> dict:
    code, output = run_cli("export", str(run), "--format", fmt, "--out", str(out), "--json", *extra)
    assert code == 0, output
    return json.loads(output)


def vl2v_logits(run: Path, images: list[Path]) -> torch.Tensor:
    """The run's own student on image files, through vl2v's preprocessing."""
    method, meta = load_student(next(run.rglob("model.safetensors")))
    transform, normalize = eval_transform(meta["image_size"]), Normalize(tuple(meta["mean"]), tuple(meta["std"]))
    from PIL import Image

    pixels = []
    for path in images:
        with Image.open(path) as image:
            pixels.append(transform(to_rgb(image)))
    with torch.no_grad():
        return method.predict(normalize(torch.stack(pixels)))


def some_images(pacs_mini: Path, n: int = 6) -> list[Path]:
    return [p for domain in ("photo", "sketch") for p in sorted((pacs_mini / domain / "dog").iterdir())[: n // 2]]


def test_a_run_that_held_a_source_out_is_checked_on_its_own_sources(pacs_cache, tmp_path):
    distill_cli(pacs_cache, tmp_path / "run", "erm", "--holdout", "photo")
    images = check_images(open_run(tmp_path / "run"))
    photo, sketch = 2, 3  # pacs: art_painting, cartoon, photo, sketch
    assert {s.domain for s in images.in_domain} == {s.domain for s in images.calibration} == {0, 1}
    assert {s.domain for s in images.out_of_domain} == {sketch} and photo not in {s.domain for s in images.in_domain}


@pytest.mark.parametrize("method", METHODS)
def test_onnx_export_of_every_method_gives_the_runs_logits(runs, tmp_path, pacs_mini, method):
    report = export(runs / method, "onnx", tmp_path / "student.onnx")
    check = report["check"]
    assert report["passed"] and check["largest_logit_difference"] <= 1e-4 and check["top1_agreement"] == 1.0
    run = open_run(runs / method)
    images = check_images(run)
    assert check["images"] == len(images.in_domain) + len(images.out_of_domain) > 100
    assert check["accuracy"]["export"] == check["accuracy"]["torch"]
    assert check["accuracy"]["torch"]["ood"] == pytest.approx(run.final["target_acc"])
    # One graph, weights inside, any batch size: uint8 pixels in, logits over the classes out.
    model = onnx.load(str(tmp_path / "student.onnx"))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    meta = json.loads(model.metadata_props[0].value)
    assert meta["classes"] == run.meta["classes"] and meta["input"]["dtype"] == "uint8"
    assert meta["mean"] == run.meta["mean"] and meta["image_size"] == 32 and meta["method"] == method
    session = ort.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    files = some_images(pacs_mini)
    expected = vl2v_logits(runs / method, files)
    transform = eval_transform(32)
    from PIL import Image

    pixels = np.stack([transform(to_rgb(Image.open(p))).numpy() for p in files])
    for batch in (1, len(files)):
        (logits,) = session.run(None, {"images": pixels[:batch]})
        assert logits.shape == (batch, 7)
        np.testing.assert_allclose(logits, expected[:batch].numpy(), atol=1e-4)


def test_predict_and_evaluate_give_the_same_answers_from_the_onnx_file(runs, tmp_path, pacs_mini):
    export(runs / "adip", "onnx", tmp_path / "adip.onnx")
    files = [str(p) for p in some_images(pacs_mini)]
    answers = []
    for model in (runs / "adip", tmp_path / "adip.onnx"):
        code, output = run_cli("predict", str(model), *files, "--top-k", "3", "--json")
        assert code == 0, output
        answers.append(json.loads(output)["predictions"])
    for ours, theirs in zip(*answers, strict=True):
        assert [c["class"] for c in ours["top"]] == [c["class"] for c in theirs["top"]]
        assert [c["probability"] for c in ours["top"]] == pytest.approx(
            [c["probability"] for c in theirs["top"]], abs=1e-5
        )
    accuracies = []
    for model in (runs / "adip", tmp_path / "adip.onnx"):
        code, output = run_cli("evaluate", str(model), "--data-dir", str(pacs_mini), "--workers", "0", "--json")
        assert code == 0, output
        accuracies.append(json.loads(output)["results"][0]["accuracy"])
    assert accuracies[0] == accuracies[1] and set(accuracies[0]) == {"art_painting", "cartoon", "photo", "sketch"}


def test_int8_is_quantized_calibrated_on_sources_and_reports_its_accuracy_beside_fp32(runs, tmp_path, pacs_mini):
    fp32 = export(runs / "kd", "onnx", tmp_path / "fp32.onnx")
    int8 = export(runs / "kd", "onnx", tmp_path / "int8.onnx", "--quantize", "int8")
    assert int8["check"] == fp32["check"], "the fp32 graph is checked before it is quantized"
    assert (
        set(int8["int8"]["accuracy"]["export"]) == {"id", "ood"} and int8["int8"]["images"] == fp32["check"]["images"]
    )
    model = onnx.load(str(tmp_path / "int8.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "int8" in json.loads(model.metadata_props[0].value)["quantized"]
    code, output = run_cli("predict", str(tmp_path / "int8.onnx"), str(some_images(pacs_mini)[0]), "--json")
    assert code == 0 and len(json.loads(output)["predictions"][0]["top"]) == 3
    card = (tmp_path / "int8.md").read_text()
    assert "ONNX Runtime int8" in card and "ONNX Runtime fp32" in card


# Plain timm, in a process where importing any vl2v package fails: the folder needs timm alone.
TIMM_USER = """
import json, sys
for name in ("cli", "student", "cache", "teacher_service"):
    sys.modules[name] = None
import timm, torch
from PIL import Image
model = timm.create_model("local-dir:" + sys.argv[1], pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
with torch.no_grad():
    logits = model(torch.stack([transform(Image.open(p).convert("RGB")) for p in sys.argv[2:]]))
print(json.dumps({"logits": logits.tolist(), "labels": model.pretrained_cfg["label_names"]}))
"""


@pytest.mark.parametrize("method", ["kd", "rise", "adip"])
def test_timm_folder_loads_in_plain_timm_with_the_runs_answers(runs, tmp_path, pacs_mini, method):
    report = export(runs / method, "timm", tmp_path / "folder")
    assert report["passed"] and report["check"]["top1_agreement"] == 1.0
    assert sorted(Path(f).name for f in report["files"]) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "folder" / "config.json").read_text())
    classes = open_run(runs / method).meta["classes"]
    assert config["architecture"] == "test_resnet" and config["num_classes"] == 7 and config["label_names"] == classes
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["crop_mode"] == "squash" and cfg["crop_pct"] == 1.0
    files = some_images(pacs_mini)
    done = subprocess.run(
        [sys.executable, "-c", TIMM_USER, str(tmp_path / "folder"), *map(str, files)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    plain = json.loads(done.stdout)
    theirs, ours = torch.tensor(plain["logits"]), vl2v_logits(runs / method, files)
    assert plain["labels"] == classes
    assert torch.equal(theirs.argmax(1), ours.argmax(1))
    if method == "adip":  # a cosine head folded into a linear one: same ranking, logits rescaled per image
        assert "rescaled" in report["folded"] and torch.equal(theirs.argsort(1), ours.argsort(1))
    else:
        assert report["check"]["largest_logit_difference"] <= 1e-4
        torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_the_model_card_states_teacher_method_data_accuracy_and_images_paid(runs, tmp_path):
    report = export(runs / "kd", "timm", tmp_path / "kd")
    card = Path(report["card"]).read_text()
    run = open_run(runs / "kd")
    assert card.startswith("---\nlibrary_name: timm\n")
    for fact in (
        f"`{run.described['teacher']['id']}`",
        "`kd`: KD",
        "trained on art_painting, cartoon, photo; `sketch` held out",
        f"{100 * run.final['source_val_acc']:.1f}%",
        f"{100 * run.final['target_acc']:.1f}%",
        f"| teacher queries paid | {run.described['cached_images']} images |",
        "dog, elephant, giraffe",
        'timm.create_model("local-dir:kd", pretrained=True)',
        f"| trained on | {run.environments[0]['cpu']}, {torch.get_num_threads()} thread"
        f"{'' if torch.get_num_threads() == 1 else 's'}, torch {torch.__version__} |",
    ):
        assert fact in card, fact


def test_push_to_hub_uploads_the_folder_with_its_card(runs, tmp_path, monkeypatch):
    calls: list[tuple] = []

    class Hub:  # huggingface_hub.HfApi, up to the upload
        def __init__(self, token=None, library_name=None) -> None:
            calls.append(("init", library_name))

        def create_repo(self, repo_id, exist_ok=False):
            calls.append(("create_repo", repo_id, exist_ok))
            return type("Url", (), {"repo_id": f"someone/{repo_id}"})()

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setattr("huggingface_hub.HfApi", Hub)
    report = export(runs / "kd", "timm", tmp_path / "kd", "--push-to-hub", "kd-student")
    assert calls == [
        ("init", "vl2v"),
        ("create_repo", "kd-student", True),
        ("upload_folder", "someone/kd-student", ["README.md", "config.json", "model.safetensors"]),
    ]
    assert report["pushed"] == "https://huggingface.co/someone/kd-student/commit/abc"


def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path):
    def refused(*args: str) -> str:
        code, output = run_cli("export", *args)
        assert code == ERROR and len(output.strip().splitlines()) == 1, output
        return output

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "is not a vl2v run folder" in refused(str(empty), "--format", "onnx", "--out", str(tmp_path / "a.onnx"))
    assert "does not exist" in refused(str(tmp_path / "nowhere"), "--format", "onnx", "--out", str(tmp_path / "a.onnx"))
    assert "holds 5 students" in refused(str(runs), "--format", "onnx", "--out", str(tmp_path / "a.onnx"))
    # A student written by another version of vl2v.
    model = next((runs / "kd").rglob("model.safetensors"))
    with safe_open(str(model), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["vl2v"])  # noqa: SIM118
    other = tmp_path / "other" / "sketch" / "trial_0"
    other.mkdir(parents=True)
    save_file(
        tensors, str(other / "model.safetensors"), metadata={"vl2v": json.dumps(meta | {"format": "vl2v-student/2"})}
    )
    message = refused(str(other / "model.safetensors"), "--format", "onnx", "--out", str(tmp_path / "a.onnx"))
    assert "written by another version of vl2v (format vl2v-student/2" in message
    # An --out that cannot be written (below a file), a folder given for a file, options that do not go together.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "cannot write --out" in refused(str(runs / "kd"), "--format", "onnx", "--out", str(blocker / "a.onnx"))
    assert "is a folder" in refused(str(runs / "kd"), "--format", "onnx", "--out", str(empty))
    assert "exists and is not an earlier timm export" in refused(
        str(runs / "kd"), "--format", "timm", "--out", str(blocker)
    )
    assert "--quantize applies to --format onnx" in refused(
        str(runs / "kd"), "--format", "timm", "--out", str(tmp_path / "t"), "--quantize", "int8"
    )
    assert "is not one of" in refused(str(runs / "kd"), "--format", "tflite", "--out", str(tmp_path / "t"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "other"]


def test_sd_exports_to_onnx_and_refuses_timm_in_one_line(pacs_cache, tiny_checkpoint, tmp_path):
    distill_cli_sd = [
        "distill", "--cache", str(pacs_cache), "--method", "sd", "--student", "vl2v-tiny", "--student-weights",
        str(tiny_checkpoint), "--image-size", "32", "--test-domain", "sketch", "--out", str(tmp_path / "sd"),
        "--steps", "2", "--eval-every", "2", "--batch-size", "4", "--workers", "0",
    ]  # fmt: skip
    code, output = run_cli(*distill_cli_sd)
    assert code == 0, output
    report = export(tmp_path / "sd", "onnx", tmp_path / "sd.onnx")
    assert report["passed"] and report["check"]["largest_logit_difference"] <= 1e-4
    code, output = run_cli("export", str(tmp_path / "sd"), "--format", "timm", "--out", str(tmp_path / "sd-timm"))
    assert code == ERROR and "teacher's own image tower" in output and "--format onnx" in output
    assert not (tmp_path / "sd-timm").exists()


def readme_snippets() -> list[str]:
    """The Python blocks of the README's "Deploying the student" section, in order (ONNX Runtime, then timm)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Deploying the student") :]
    section = section[: section.index("\n## ")]
    return [block.split("\n```", 1)[0] for block in section.split("```python\n")[1:]]


# Neither vl2v nor (for ONNX Runtime) torch can be imported where a snippet runs: it needs neither.
BLOCKED = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None\n"


@pytest.mark.parametrize("form", ["onnx", "timm"])
def test_the_readmes_snippets_run_without_vl2v_and_give_the_runs_answer(runs, tmp_path, pacs_mini, form):
    onnx_snippet, timm_snippet = readme_snippets()
    snippet = onnx_snippet if form == "onnx" else timm_snippet
    assert len([line for line in snippet.splitlines() if line.strip()]) <= 10
    if form == "onnx":
        export(runs / "adip", "onnx", tmp_path / "adip.onnx")
        blocked = ("cli", "student", "cache", "teacher_service", "torch")
    else:
        export(runs / "adip", "timm", tmp_path / "adip-timm")
        blocked = ("cli", "student", "cache", "teacher_service")
    photo = some_images(pacs_mini)[0]
    (tmp_path / "photo.jpg").write_bytes(photo.read_bytes())
    program = BLOCKED.format(names=blocked) + snippet
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    logits = vl2v_logits(runs / "adip", [photo])
    assert done.stdout.strip() == open_run(runs / "adip").meta["classes"][int(logits.argmax())]
