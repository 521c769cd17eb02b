"""`vl2v export`: a run's student written as ONNX or as a timm folder, checked on the run's images, with its card.

Nothing is left half-written: each format is built beside `--out` under a temporary name and moved into place
once its checks have run. The checks compare the export with the run folder's own student on the run's evaluation
images (the source domains' validation splits and the held-out domain): the largest logit difference and the
share of images whose top-1 class agrees.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import timm
import torch
from PIL import Image

from cache.errors import UserError
from common.imaging import to_rgb

from ..config import ExportConfig
from ..data import Sample, eval_transform
from .agreement import Agreement, Tally
from .card import model_card
from .classifier import TorchClassifier
from .onnx_export import BATCH, agreement, export_onnx, quantize_int8
from .predictor import INPUT, NotLinear, Predictor
from .run_folder import CheckImages, TrainedRun, check_images, open_run
from .timm_export import push_to_hub, save_timm, timm_model

LOGIT_TOLERANCE = 1e-4  # the largest |logit difference| an fp32 export may show against the run's own student
FEATURE_IMAGES = 256  # source training images whose features scale ADiP's folded head


@dataclass
class ExportReport:
    format: str
    out: str
    card: str
    run: str
    check: Agreement  # the fp32 export (ONNX graph or timm folder) against the run's student
    int8: Agreement | None = None  # the quantised graph against the run's student
    folded: str | None = None  # how a timm folder's classifier was made from the method's head
    pushed: str | None = None  # the Hub commit URL
    files: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """The fp32 export gives the run's answers: logits within `LOGIT_TOLERANCE` (or, for a head folded with
        a rescaling, the same top-1) on every image."""
        exact_logits = self.folded is None or "rescaled" not in self.folded
        close = self.check.largest_difference <= LOGIT_TOLERANCE or not exact_logits
        return close and self.check.top1_agreement == 1.0

    def to_json(self) -> dict:
        return {
            "format": self.format,
            "out": self.out,
            "files": self.files,
            "card": self.card,
            "run": self.run,
            "check": self.check.to_json(),
            "int8": self.int8.to_json() if self.int8 else None,
            "folded": self.folded,
            "pushed": self.pushed,
            "passed": self.passed,
            "tolerance": LOGIT_TOLERANCE,
        }


def export(config: ExportConfig) -> ExportReport:
    """Write the export `config` asks for; returns what was written and how it compared with the run.

    Raises:
        RunFolderError, StudentFormatError: `config.run` is not a run, or of another version.
        UserError: `--out` cannot be written, the run's images cannot be found, or the method has no timm form.
    """
    run = open_run(config.run)
    out = config.out.expanduser()
    _check_writable(out, folder=config.format == "timm")
    images = check_images(run, config.data_dir)
    if config.format == "onnx":
        return _onnx(run, out, images, config)
    return _timm(run, out, images, config)


def _onnx(run: TrainedRun, out: Path, images: CheckImages, config: ExportConfig) -> ExportReport:
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(run, fp32, _provenance(run))
        check = agreement(run, fp32, images)
        int8 = None
        written = fp32
        if config.quantize == "int8":
            written = Path(tmp) / "int8.onnx"
            quantize_int8(fp32, written, run, images)
            int8 = agreement(run, written, images)
        card = out.with_suffix(".md")
        checks = [_described(check, "ONNX Runtime fp32")] + ([_described(int8, "ONNX Runtime int8")] if int8 else [])
        loading = _onnx_snippet(out.name, run.meta["image_size"])
        card.write_text(model_card(run, title=f"{_title(run)} (ONNX)", loading=loading, checks=checks))
        os.replace(written, out)
    return ExportReport("onnx", str(out), str(card), str(run.model_path), check, int8, files=[str(out), str(card)])


def _timm(run: TrainedRun, out: Path, images: CheckImages, config: ExportConfig) -> ExportReport:
    features = _features(run, images)
    try:
        model, folded = timm_model(run, features)
    except NotLinear as e:
        raise UserError(str(e)) from None
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        save_timm(model, run, staging)
        check = timm_agreement(run, staging, images)
        checks = [_described(check, "timm local-dir: with timm's own transforms"), f"classifier: {folded}"]
        loading = _timm_snippet(out)
        (staging / "README.md").write_text(model_card(run, title=_title(run), loading=loading, checks=checks))
        _readable(staging)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    pushed = push_to_hub(out, config.push_to_hub) if config.push_to_hub else None
    files = sorted(str(p) for p in out.iterdir())
    card = str(out / "README.md")
    return ExportReport("timm", str(out), card, str(run.model_path), check, folded=folded, pushed=pushed, files=files)


@torch.no_grad()
def timm_agreement(run: TrainedRun, folder: Path, images: CheckImages) -> Agreement:
    """The folder as a timm user loads it, with timm's transforms, against the run's student with vl2v's, on the
    same image files: this checks the weights and that `pretrained_cfg` reproduces vl2v's preprocessing."""
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    ours = eval_transform(run.meta["image_size"])
    reference = TorchClassifier(Predictor(run.method).eval(), run.meta, torch.device("cpu"))
    tally = Tally()
    for role, samples in (("id", images.in_domain), ("ood", images.out_of_domain)):
        for start in range(0, len(samples), BATCH):
            pictures, labels = _open(images.root, samples[start : start + BATCH])
            if pictures:
                expected = reference(torch.stack([ours(p) for p in pictures]))
                tally.add(role, expected, model(torch.stack([transform(p) for p in pictures])).float(), labels)
    return tally.result()


def _open(root: Path, samples: list[Sample]) -> tuple[list[Image.Image], torch.Tensor]:
    pictures, labels = [], []
    for s in samples:
        try:
            with Image.open(root / s.path) as image:
                pictures.append(to_rgb(image))
        except OSError:
            continue  # an unreadable file is left out, as the evaluation loader leaves it out
        labels.append(s.label)
    return pictures, torch.tensor(labels, dtype=torch.long)


@torch.no_grad()
def _features(run: TrainedRun, images: CheckImages) -> torch.Tensor:
    """The backbone's features of up to `FEATURE_IMAGES` source training images (never the target's)."""
    step = max(1, len(images.calibration) // FEATURE_IMAGES)
    pictures, _ = _open(images.root, images.calibration[::step][:FEATURE_IMAGES])
    transform = eval_transform(run.meta["image_size"])
    mean = torch.tensor(run.meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(run.meta["std"]).view(1, 3, 1, 1)
    pixels = torch.stack([transform(p) for p in pictures]).float() / 255
    return run.method.backbone((pixels - mean) / std)


def _readable(folder: Path) -> None:
    """The permissions a folder and its files get when made in the usual way (a temporary folder is private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _check_writable(out: Path, *, folder: bool) -> None:
    """Fail before any work when `--out` cannot be written, or would replace something that is not an export."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as e:
        raise UserError(f"cannot write --out {out} ({type(e).__name__}: {e.strerror or e})") from None
    if folder and out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").is_file())):
        raise UserError(f"--out {out} exists and is not an earlier timm export: give a new folder")
    if not folder and out.is_dir():
        raise UserError(f"--out {out} is a folder: give the .onnx file to write")


def _provenance(run: TrainedRun) -> dict:
    return {
        "vl2v": version("vl2v"),
        "run": str(run.model_path),
        "target": run.target,
        "id_acc": run.final["source_val_acc"],
        "ood_acc": run.final["target_acc"],
    }


def _title(run: TrainedRun) -> str:
    return f"{run.meta['method']} student ({run.meta['student']}) for {run.meta['dataset']}"


def _described(check: Agreement, what: str) -> str:
    acc = check.accuracy
    return (
        f"{what} against the run's own student on {check.images} images: largest logit difference "
        f"{check.largest_difference:.2g}, top-1 agreement {100 * check.top1_agreement:.2f}%; accuracy in domain "
        f"{100 * acc['export']['id']:.1f}% (run: {100 * acc['torch']['id']:.1f}%), out of domain "
        f"{100 * acc['export']['ood']:.1f}% (run: {100 * acc['torch']['ood']:.1f}%)"
    )


def _onnx_snippet(name: str, size: int) -> str:
    return "\n".join(
        [
            "```python",
            "import json, numpy as np, onnxruntime as ort",
            "from PIL import Image",
            "",
            f'session = ort.InferenceSession("{name}", providers=["CPUExecutionProvider"])',
            'meta = json.loads(session.get_modelmeta().custom_metadata_map["vl2v"])',
            f'image = Image.open("photo.jpg").convert("RGB").resize(({size}, {size}), Image.BILINEAR)',
            "pixels = np.asarray(image).transpose(2, 0, 1)[None]  # uint8, (1, 3, H, W): the graph normalises",
            '(logits,) = session.run(None, {"images": pixels})',
            'print(meta["classes"][int(logits.argmax())])',
            "```",
            "",
            f"Input: {INPUT['dtype']} {INPUT['layout']} {INPUT['channels']}, any batch size, {size}x{size}.",
        ]
    )


def _timm_snippet(out: Path) -> str:
    return "\n".join(
        [
            "```python",
            "import timm, torch",
            "from PIL import Image",
            "",
            f'model = timm.create_model("local-dir:{out.name}", pretrained=True).eval()',
            "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))",
            'image = Image.open("photo.jpg").convert("RGB")',
            "with torch.no_grad():",
            "    logits = model(transform(image)[None])",
            "print(model.pretrained_cfg['label_names'][int(logits.argmax())])",
            "```",
        ]
    )
