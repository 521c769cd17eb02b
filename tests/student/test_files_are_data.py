"""Nothing vl2v reads back from a folder runs code: a resume checkpoint is tensors and JSON, and a pickled,
truncated, tampered or foreign one is one line naming the file."""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path

import torch

from cli.exit_codes import ERROR
from student.state_file import load_state, save_state
from student.trainer import CHECKPOINT, PICKLED_CHECKPOINT

from ..conftest import REPO
from .test_distill import distill_args, distill_cli, run_cli

RUN = Path("sketch") / "trial_0"


class _RunsCode:
    """What an attacker leaves in a run folder: unpickling it calls `Path.touch` on a file of their choice."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _unfinished_run(pacs_cache: Path, out: Path) -> list[str]:
    """A finished run made to look cut short (its last checkpoint kept, its final outputs gone): `--resume`
    reads the checkpoint."""
    args = distill_args(pacs_cache, out, "erm")
    distill_cli(pacs_cache, out, "erm")
    (out / RUN / "model.safetensors").unlink()
    (out / "summary.json").unlink()
    return args


def test_a_pickled_checkpoint_in_a_run_folder_is_never_unpickled(pacs_cache, tmp_path):
    out, marker = tmp_path / "run", tmp_path / "attacker-ran-code"
    args = _unfinished_run(pacs_cache, out)
    (out / RUN / CHECKPOINT).unlink()
    (out / RUN / PICKLED_CHECKPOINT).write_bytes(pickle.dumps(_RunsCode(marker)))
    code, output = run_cli(*args, "--resume")
    assert not marker.exists(), "resuming ran code from the run folder"
    assert code == ERROR and "Traceback" not in output
    assert str(out / RUN / PICKLED_CHECKPOINT) in output and "--overwrite" in output
    assert len(output.strip().splitlines()) == 1


def test_pickle_renamed_truncated_tampered_or_foreign_checkpoints_are_one_line_naming_the_file(pacs_cache, tmp_path):
    out, marker = tmp_path / "run", tmp_path / "attacker-ran-code"
    args = _unfinished_run(pacs_cache, out)
    checkpoint = out / RUN / CHECKPOINT
    good = checkpoint.read_bytes()
    other = tmp_path / "other"
    distill_cli(pacs_cache, other, "erm", "--student", "test_efficientnet")  # another architecture's weights
    damaged = {
        "a pickle under the new name": pickle.dumps(_RunsCode(marker)),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "a tampered header": good.replace(b'"F32"', b'"F64"', 1),
        "a tampered structure": good.replace(b'{\\"$tensor\\": \\"0\\"}', b'{\\"$tensor\\": \\"x\\"}', 1),
        "another model's checkpoint": (other / RUN / CHECKPOINT).read_bytes(),
    }
    for what, content in damaged.items():
        assert content != good, what
        checkpoint.write_bytes(content)
        code, output = run_cli(*args, "--resume")
        assert code == ERROR, what
        assert not marker.exists(), what
        assert str(checkpoint) in output and "Traceback" not in output, (what, output)
        assert len(output.strip().splitlines()) == 1, (what, output)
    checkpoint.write_bytes(good)
    code, output = run_cli(*args, "--resume", "--json")
    assert code == 0, output


def test_training_state_round_trips_as_data(tmp_path):
    """Nested dicts with integer keys, tuples, lists, non-finite floats and tensors come back as they went in."""
    state = {
        "model": {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)},
        "optimizer": {"state": {0: {"step": torch.tensor(2.0)}}, "param_groups": [{"params": [0], "betas": (0.9, 1)}]},
        "best": (-math.inf, None),
        "flags": [True, "x", 1.5],
    }
    save_state(state, tmp_path / "s.safetensors")
    back = load_state(tmp_path / "s.safetensors")
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["model"]["n"].item() == 3
    assert back["optimizer"]["state"][0]["step"].item() == 2.0
    assert back["optimizer"]["param_groups"] == [{"params": [0], "betas": (0.9, 1)}]
    assert back["best"] == (-math.inf, None) and back["flags"] == [True, "x", 1.5]


# What may read a file back. Anything that unpickles is refused by name; torch.load only with weights_only=True.
_UNSAFE = {
    "pickle": re.compile(r"^\s*(import pickle|from pickle|import dill|import cloudpickle)|pickle\.loads?\(", re.M),
    "np.load with allow_pickle": re.compile(r"allow_pickle\s*=\s*True"),
    "yaml.load": re.compile(r"yaml\.(load|unsafe_load|full_load)\("),
    "torch.save of anything": re.compile(r"torch\.save\("),
}


def test_no_code_in_the_repository_unpickles_what_it_reads():
    """The audit, kept: vl2v's packages, benches and tools read files back as data only (tests may pickle, to
    attack)."""
    found = []
    for folder in ("teacher_service", "cache", "student", "cli", "bench", "tools"):
        for path in sorted((REPO / folder).rglob("*.py")):
            text = path.read_text()
            found += [f"{path.relative_to(REPO)}: {what}" for what, pattern in _UNSAFE.items() if pattern.search(text)]
            found += [
                f"{path.relative_to(REPO)}: torch.load({call})"
                for call in _calls(text, "torch.load(")
                if "weights_only=True" not in call
            ]
    assert found == []


def _calls(text: str, opening: str) -> list[str]:
    """The argument text of every call that starts with `opening`, up to its matching parenthesis."""
    calls = []
    for start in (m.end() for m in re.finditer(re.escape(opening), text)):
        depth, end = 1, start
        while depth and end < len(text):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        calls.append(text[start : end - 1])
    return calls
