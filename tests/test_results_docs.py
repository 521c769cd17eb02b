"""The result tables of the README and docs/ are rendered from committed results files, never edited by hand."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest

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
        for name in renderer().block_files(block):
            record = json.loads((REPO / name).read_text())
            assert record["command"].startswith(
                ("python tools/measure_demo.py", "python tools/shortcut_probe.py", "python bench/budget_study.py",
                 "python tools/seed_split.py", "python tools/search_demo.py")
            ), "a results file names the command that wrote it"  # fmt: skip
            assert len(record["commit"]) == 40
            studies = record["views"].values() if isinstance(record.get("views"), dict) else [record]  # a views study
            if "worlds" in record:
                studies = [{"seeds": world["train_seeds"]} for world in record["worlds"].values()]
            if "search" in record:
                studies = [{"seeds": point["worlds"]} for point in record["search"]]
            for seeds in (study.get("seeds") or study.get("shortcut") or study["study"] for study in studies):
                assert len(seeds) >= 3, "a claim rests on three seeds at least"


def test_no_table_of_measurements_is_kept_by_hand():
    """Outside the rendered blocks, docs/demo.md (the page of measurements) has no table at all, and the README no
    table with a mean ± standard error: a number kept by hand would go stale when its result moved."""
    block = renderer().BLOCK
    demo = block.sub("", (REPO / "docs" / "demo.md").read_text())
    readme = block.sub("", (REPO / "README.md").read_text())
    assert [line for line in demo.splitlines() if line.startswith("|")] == []
    assert [line for line in readme.splitlines() if line.startswith("|") and "±" in line] == []


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
    assert lines[1] == (
        "| views K | images paid | KD OOD | KD − K=0, paired | VL2V-ADiP OOD | VL2V-ADiP − K=0, paired | every seed |"
    )
    assert lines[3] == "| 0 | 640 | 60.0 ± 10.0 |  | 70.0 ± 10.0 |  | KD 50.0 / 70.0; VL2V-ADiP 60.0 / 80.0 |"
    assert lines[4] == (
        "| 4 | 3200 | 60.0 ± 5.0 | 0.0 ± 5.0 (1 of 2 above) | 60.0 ± 10.0 | -10.0 ± 0.0 (0 of 2 above) | "
        "KD 55.0 / 65.0; VL2V-ADiP 50.0 / 70.0 |"
    ), "paired by seed against K = 0: KD +5 then -5, ADiP -10 twice"
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
    other_world = record([0.62, 0.74], [0.66, 0.71])
    other_world["seeds"]["1"]["unlabelled"] = 320  # the same seed, drawn with unlabelled images this time
    (tmp_path / "docs" / "b.json").write_text(json.dumps(other_world))
    with pytest.raises(SystemExit, match=r"seed 1 was measured on two worlds .*'unlabelled': 0.*'unlabelled': 320"):
        module.render("<!-- results docs/a.json vs docs/b.json -->\nstale\n<!-- end results -->\n")


def test_a_shortcut_probe_renders_each_models_accuracy_by_background_and_the_drop(tmp_path, monkeypatch):
    module = renderer()

    def seed(erm_other: float, kd_random: float, kd_ood: float) -> dict:
        return {
            "ood_acc": {"erm": 0.7, "kd": kd_ood},
            "accuracy": {
                "erm": {"own": 1.0, "random": 0.8, "other": erm_other},
                "kd": {"own": 1.0, "random": kd_random, "other": 0.75 + (kd_random - 0.85)},
                "teacher": {"own": 0.95, "random": 0.95, "other": 0.95},
            },
        }

    record = {"command": "python tools/shortcut_probe.py --seeds 0 1", "measured": "2026-12-03", "commit": "c" * 40,
              "uncommitted_changes": False, "machine": {"cpu": "CPU", "torch_threads": 2, "torch": "2.14.1"},
              "target": "sketch", "shortcut": {"0": seed(0.5, 0.8, 0.72), "1": seed(0.7, 0.9, 0.73)}}  # fmt: skip
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "probe.json").write_text(json.dumps(record))
    monkeypatch.setattr(module, "REPO", tmp_path)
    lines = module.render("<!-- results docs/probe.json -->\nstale\n<!-- end results -->\n").splitlines()
    assert lines[3] == "| ERM | 100.0 ± 0.0 | 80.0 ± 0.0 | 60.0 ± 10.0 | 40.0 ± 10.0 | 70.0 ± 0.0 |  |  |  |"
    kd = "| KD | 100.0 ± 0.0 | 85.0 ± 5.0 | 75.0 ± 5.0 | 25.0 ± 5.0 | 72.5 ± 0.5 | 5.0 ± 5.0 (1 of 2 above) |"
    # paired with ERM by seed: random 0 and 10 points, another's 20 and 10, held out 2 and 3
    assert lines[4] == kd + " 15.0 ± 5.0 (2 of 2 above) | 2.5 ± 0.5 |"
    teacher = "| teacher, zero-shot (demo CLIP) | 95.0 ± 0.0 | 95.0 ± 0.0 | 95.0 ± 0.0 | 0.0 ± 0.0 | – |  |  |  |"
    assert lines[5] == teacher
    assert not any(line.startswith("The world:") for line in lines), "a file from before the world was recorded"
    (tmp_path / "docs" / "probe.json").write_text(json.dumps(record | {"context_bias": 1.0}))
    lines = module.render("<!-- results docs/probe.json -->\nstale\n<!-- end results -->\n").splitlines()
    assert "The world: 100% of each source class on its own pattern; 2 seeds." in lines
    (tmp_path / "docs" / "probe.json").write_text(json.dumps(record | {"context_bias": 0.9, "views": 4}))
    lines = module.render("<!-- results docs/probe.json -->\nstale\n<!-- end results -->\n").splitlines()
    assert (
        "The world: 90% of each source class on its own pattern, 4 augmented views bought of each image; 2 seeds."
        in lines
    )


def test_the_shortcut_probe_shows_the_same_fresh_shapes_and_changes_only_their_background(monkeypatch):
    import random

    import numpy as np

    monkeypatch.syspath_prepend(str(REPO / "tools"))  # the probe imports measure_demo beside it, as when run
    spec = importlib.util.spec_from_file_location("shortcut_probe", REPO / "tools" / "shortcut_probe.py")
    assert spec and spec.loader
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    rng = random.Random(0)
    for label in range(len(probe.PATTERNS)):
        assert probe.pattern_of("own", label, rng) == label
        assert all(probe.pattern_of("other", label, rng) != label for _ in range(50)), "never its own pattern"
    monkeypatch.setattr(probe, "PER_CLASS", 2)
    sets = probe.probe_images(0, "sketch")
    labels = sets["own"][1]
    assert len(labels) == 3 * len(probe.CLASSES) * 2, "the three source domains, never the held-out one"
    for condition in ("random", "other"):
        assert sets[condition][1].tolist() == labels.tolist()
    own, other = (np.asarray(image, dtype=np.int16) for image in (sets["own"][0][0], sets["other"][0][0]))
    assert own.shape == other.shape and np.abs(own - other).max() > 0, "another background"


def test_a_budget_study_renders_its_table_its_goals_and_its_chart(tmp_path, monkeypatch):
    module = renderer()

    def run(kd: float, paid: int) -> dict:
        return {"images_paid": paid, "cost": paid * 1e-4, "methods": {"kd": {"id_acc": 0.9, "ood_acc": kd}}}

    def seed(random: float, kcenter: float, full: float) -> dict:
        return {"budgets": {"25": {"random": run(random, 120), "kcenter": run(kcenter, 120)},
                            "100": {"all": run(full, 480)}}, "equal_spend": {}}  # fmt: skip

    record = {"command": "python bench/budget_study.py", "measured": "2026-12-03", "commit": "d" * 40,
              "uncommitted_changes": False, "machine": {"cpu": "CPU", "torch_threads": 2, "torch": "2.14.1"},
              "target": "sketch", "study": {"0": seed(0.50, 0.60, 0.62), "1": seed(0.52, 0.62, 0.64),
                                            "2": seed(0.48, 0.61, 0.63)}}  # fmt: skip
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.json").write_text(json.dumps(record))
    monkeypatch.setattr(module, "REPO", tmp_path)
    text = module.render("<!-- results docs/b.json -->\nstale\n<!-- end results -->\n", draw=True)
    assert "| 25% | 120 | 0.0120 | kcenter | 61.0 ± 0.6 |" in text
    assert "| 100% | 480 | 0.0480 | all | 63.0 ± 0.6 |" in text
    assert "kcenter, reaches 97% of the full budget's OOD accuracy (goal: 95%, met)" in text
    assert "beats random by 11.0 ± 1.0 points, paired by seed (goal: more than two standard errors, met)" in text
    assert (tmp_path / "docs" / "b.png").read_bytes().startswith(b"\x89PNG")


def _demo_record(erm: list[float], kd: list[float], quick: bool = False, target: str = "sketch") -> dict:
    seeds = {
        str(i): {"teacher_zeroshot": {target: 0.9}, "methods": {"erm": {"ood_acc": e}, "kd": {"ood_acc": k}}}
        for i, (e, k) in enumerate(zip(erm, kd, strict=True))
    }
    return {"command": "python tools/measure_demo.py", "measured": "2026-12-03", "commit": "d" * 40,
            "uncommitted_changes": False, "machine": {"cpu": "CPU", "torch_threads": 2, "torch": "2.14.1"},
            "quick": quick, "target": target, "seeds": seeds}  # fmt: skip


def test_results_of_several_paths_pool_into_one_paired_difference_over_every_run(tmp_path, monkeypatch):
    module = renderer()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.json").write_text(json.dumps(_demo_record([0.60, 0.70], [0.62, 0.74])))
    (tmp_path / "docs" / "b.json").write_text(json.dumps(_demo_record([0.50, 0.50], [0.49, 0.55], True, "painting")))
    monkeypatch.setattr(module, "REPO", tmp_path)
    lines = module.render("<!-- results docs/a.json + docs/b.json -->\nstale\n<!-- end results -->\n").splitlines()
    assert lines[1] == (
        "| method | OOD − ERM, paired, every run | above ERM | beyond two s.e. | gap closed, every run | "
        "default, sketch | quick, painting |"
    )
    # differences 2, 4, -1, 5 points: mean 2.5, standard deviation 2.65, standard error 1.3 (2.5 < 2 x 1.3); the
    # teacher 90 against ERM's 60, 70, 50, 50: a mean gap of 32.5 points, of which 2.5 is 8%
    assert lines[3] == "| KD | 2.5 ± 1.3 | 3 of 4 runs | no | 8% | +3.0 | +2.0 |"


def test_a_seed_split_sets_the_spread_of_training_seeds_beside_the_spread_of_demo_seeds(tmp_path, monkeypatch):
    module = renderer()

    def world(erm: list[float], kd: list[float]) -> dict:
        runs = {seed: run["methods"] for seed, run in _demo_record(erm, kd)["seeds"].items()}
        for run in runs.values():
            run["erm"]["id_acc"], run["kd"]["id_acc"] = 0.95, 0.97
        return {"teacher_zeroshot": 0.9, "train_seeds": runs}

    split = {"command": "python tools/seed_split.py", "measured": "2026-12-03", "commit": "e" * 40,
             "uncommitted_changes": False, "machine": {"cpu": "CPU", "torch_threads": 2, "torch": "2.14.1"},
             "target": "sketch", "worlds": {"0": world([0.60, 0.64], [0.62, 0.62]),
                                            "1": world([0.70, 0.70], [0.71, 0.75])}}  # fmt: skip
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "split.json").write_text(json.dumps(split))
    (tmp_path / "docs" / "demo.json").write_text(json.dumps(_demo_record([0.60, 0.70, 0.80], [0.62, 0.74, 0.80])))
    monkeypatch.setattr(module, "REPO", tmp_path)
    text = module.render("<!-- results docs/split.json vs docs/demo.json -->\nstale\n<!-- end results -->\n")
    lines = text.splitlines()
    assert lines[1:4] == ["| world | training seed | ERM | KD | KD − ERM |", "|---|---|---|---|---|",
                          "| 0 | 0 | 60.0 | 62.0 | 2.0 |"]  # fmt: skip
    # ERM: world 0 60 and 64, world 1 70 and 70: squares 8 over 2 degrees of freedom, sd 2.0; KD: 0 + 8 over 2,
    # sd 2.0; KD - ERM: world 0 2 and -2, world 1 1 and 5: 8 + 8 over 2, sd 2.8. Across demo seeds: 10.0, 9.2, 2.0
    assert "| across training seeds, one world (pooled over 2) | 2.0 | 2.0 | 2.8 |" in lines
    assert "| every run | (4) | 66.0 ± 2.4 | 67.5 ± 3.3 | 1.5 ± 1.4 (3 of 4 above) |" in lines
    assert "| every run, source val | (4) | 95.0 | 97.0 |  |" in lines
    # ERM 66.0, KD 67.5, the teacher 90: KD closes 1.5 of 24 points
    assert "over the worlds: 90.0; the share of the ERM-to-teacher gap the every-run means close: KD 6%." in text
    # P(all 12 above) = 0.9 -> each 0.99126, z = 2.38; times the paired difference's 2.83 -> 6.7 points
    assert "needs a mean gain of 2.4 standard deviations" in text and "in points: KD − ERM: 6.7." in text
    assert "| across demo seeds (3: a new world and a new training seed each) | 10.0 | 9.2 | 2.0 |" in lines
    assert "`python tools/seed_split.py`" in text and "`python tools/measure_demo.py`" in text
    (tmp_path / "docs" / "split.json").write_text(
        json.dumps(split | {"per_class": 120, "steps": 300, "context_bias": 1})
    )
    alone = module.render("<!-- results docs/split.json -->\nstale\n<!-- end results -->\n").splitlines()
    assert (
        "| across training seeds, one world (pooled over 2, 120 images per class and source domain, 300 steps per "
        "stage, 100% of each source class on its own pattern) | 2.0 | 2.0 | 2.8 |" in alone
    )
    assert not any(line.startswith("| across demo seeds") for line in alone), "a split alone: no demo to set beside"


def test_a_demo_measured_under_load_renders_its_seconds_beside_the_same_seeds_alone(tmp_path, monkeypatch):
    module = renderer()
    alone = _demo_record([0.60, 0.70, 0.80], [0.62, 0.74, 0.80])
    loaded = _demo_record([0.60, 0.70, 0.80], [0.62, 0.74, 0.80]) | {
        "load": {"threads": 2, "job": "a 2-thread PyTorch job"}
    }
    for record, seconds in ((alone, [70, 80, 75]), (loaded, [140, 200, 150])):
        for run, s in zip(record["seeds"].values(), seconds, strict=True):
            run["wall_s"] = s
            run["methods"]["kd"]["seconds"] = s / 2  # each method's own time moves too; its accuracy does not
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "alone.json").write_text(json.dumps(alone))
    (tmp_path / "docs" / "load.json").write_text(json.dumps(loaded))
    monkeypatch.setattr(module, "REPO", tmp_path)
    text = module.render("<!-- results docs/alone.json vs docs/load.json -->\nstale\n<!-- end results -->\n")
    assert "| 1 | 80 | 200 | 2.5x |" in text
    assert "beside a 2-thread PyTorch job, on the same cores. The demo took 2.0 to 2.5 times as long" in text
    assert "every accuracy was the same as alone" in text
    loaded["seeds"]["2"]["methods"]["kd"]["ood_acc"] = 0.81
    (tmp_path / "docs" / "load.json").write_text(json.dumps(loaded))
    text = module.render("<!-- results docs/alone.json vs docs/load.json -->\nstale\n<!-- end results -->\n")
    assert "not every accuracy was the same as alone" in text


def test_a_search_point_replays_as_many_bought_views_as_it_says_and_sets_the_rest(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tools"))
    import demo_world

    from student.config import DemoConfig

    trained = []

    class Trained(Exception):
        pass

    def distill(config):
        trained.append(config)
        raise Trained  # what the search hands to training is all this test reads

    monkeypatch.setattr(demo_world, "distill", distill)
    world = demo_world.World(DemoConfig(methods=("kd",), views=4, out=tmp_path), measured={})
    for changes in ({"views": "0", "temperature": "2"}, {"temperature": "2"}):
        with pytest.raises(Trained):
            demo_world.train(world, "kd", seed=1, changes=changes)
    assert [config.views for config in trained] == [0, 4], "views=0 replays none; unset, every view the world bought"
    assert all(c.overrides["temperature"] == "2" and "views" not in c.overrides for c in trained)
    assert trained[0].out != trained[1].out, "each point trains in a folder of its own"


def test_a_search_renders_every_point_on_source_validation_with_the_chosen_one_bold(tmp_path, monkeypatch):
    module = renderer()
    spec = importlib.util.spec_from_file_location("search_demo", REPO / "tools" / "search_demo.py")
    assert spec and spec.loader
    search = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(REPO / "tools"))
    spec.loader.exec_module(search)
    grid = search.parse_grid(["kd_weight=0.5,1", "temperature=3"])
    assert grid == [{"kd_weight": "0.5", "temperature": "3"}, {"kd_weight": "1", "temperature": "3"}]
    assert search.parse_point("lr=5e-5,weight_decay=0") == {"lr": "5e-5", "weight_decay": "0"}
    with pytest.raises(SystemExit, match="expected NAME=V"):
        search.parse_point("lr=5e-5,weight_decay")

    def run(acc: float, loss: float) -> dict:
        return {"id_acc": acc, "source_val_loss": loss, "ood_acc": 0.1}

    points = [
        {"set": grid[0], "worlds": {"0": run(0.96, 0.2), "1": run(0.98, 0.2)}},
        {"set": grid[1], "worlds": {"0": run(0.97, 0.1), "1": run(0.97, 0.1)}},
    ]
    assert search.chosen(points) == 1, "equal accuracy (97%): the lower loss"
    points[0]["worlds"]["1"]["id_acc"] = 0.99
    assert search.chosen(points) == 0, "the held-out accuracy (ood_acc) plays no part"
    record = {"command": "python tools/search_demo.py --method kd", "measured": "2026-12-03", "commit": "f" * 40,
              "uncommitted_changes": False, "machine": {"cpu": "CPU", "torch_threads": 2, "torch": "2.14.1"},
              "target": "sketch", "method": "kd", "search": points, "chosen": 0}  # fmt: skip
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "search.json").write_text(json.dumps(record))
    monkeypatch.setattr(module, "REPO", tmp_path)
    lines = module.render("<!-- results docs/search.json -->\nstale\n<!-- end results -->\n").splitlines()
    assert lines[1] == "| `kd_weight` | `temperature` | source val (%), 2 worlds | source val loss |"
    assert lines[3] == "| **0.5** | **3** | **97.50** | **0.200** |"
    assert lines[4] == "| 1 | 3 | 97.00 | 0.100 |"
    assert lines[6].startswith("KD: chosen kd_weight 0.5, temperature 3. Over the search's 4 runs the validation "
                               "accuracy ranged 96.0 to 99.0 and the held-out sketch's, recorded and never used in the "
                               "choice, 10.0 to 10.0.")  # fmt: skip

    def held_out(acc: float) -> dict:
        return run(0.99, 0.2) | {"holdout_acc": acc}

    points = [  # leave-one-domain-out: the held-out source's accuracy decides, not the source splits'
        {"set": grid[0], "worlds": {"0": {"holdouts": {"cartoon": held_out(0.90), "photo": held_out(0.94)}}}},
        {"set": grid[1], "worlds": {"0": {"holdouts": {"cartoon": held_out(0.95), "photo": held_out(0.95)}}}},
    ]
    points[0]["worlds"]["0"]["holdouts"]["photo"]["id_acc"] = 1.0
    for point, target in zip(points, [(0.5, 0.7), (0.6, 0.8)], strict=True):
        for held, acc in zip(point["worlds"]["0"]["holdouts"].values(), target, strict=True):
            held["ood_acc"] = acc
    assert search.chosen(points) == 1
    (tmp_path / "docs" / "search.json").write_text(json.dumps(record | {"search": points, "chosen": 1}))
    lines = module.render("<!-- results docs/search.json -->\nstale\n<!-- end results -->\n").splitlines()
    assert lines[1] == "| `kd_weight` | `temperature` | held-out source (%), 1 worlds x 2 domains | source val loss |"
    assert lines[3] == "| 0.5 | 3 | 92.00 | 0.200 |"
    assert lines[4] == "| **1** | **3** | **95.00** | **0.200** |"
    assert lines[6].endswith("the validation accuracy ranged 90.0 to 95.0 and the held-out sketch's, recorded and "
                             "never used in the choice, 50.0 to 80.0 (correlation within worlds +0.83). The demo ships "
                             "none of these points.")  # fmt: skip

    # Where the demo ships a point the search did not choose (a rule's margin kept it, or another rule chose it),
    # the caption says so, reading each point as the trainer would ("0.20" is the demo's 0.2); where it ships the
    # choice, nothing is added.
    points[0]["set"] = {"kd_weight": "0.20", "temperature": "3"}
    (tmp_path / "docs" / "search.json").write_text(json.dumps(record | {"search": points, "chosen": 1}))
    lines = module.render("<!-- results docs/search.json -->\nstale\n<!-- end results -->\n").splitlines()
    assert lines[6].endswith("(correlation within worlds +0.83). The demo ships kd_weight 0.20, temperature 3, not "
                             "the search's choice (the text below says why).")  # fmt: skip
    (tmp_path / "docs" / "search.json").write_text(json.dumps(record | {"search": points, "chosen": 0}))
    lines = module.render("<!-- results docs/search.json -->\nstale\n<!-- end results -->\n").splitlines()
    assert lines[6].endswith("(correlation within worlds +0.83).")
    views = [point | {"set": {"views": k}} for point, k in zip(points, ["0", "4"], strict=True)]
    (tmp_path / "docs" / "search.json").write_text(json.dumps(record | {"search": views, "chosen": 1}))
    lines = module.render("<!-- results docs/search.json -->\nstale\n<!-- end results -->\n").splitlines()
    assert lines[6].startswith("KD: chosen views 4.")
    assert lines[6].endswith("The demo ships views 0, not the search's choice (the text below says why).")


def test_an_oracle_table_bounds_what_any_rule_could_have_chosen_from_the_points_searched(tmp_path, monkeypatch):
    module = renderer()
    demo = _demo_record([0.6, 0.7], [0.6, 0.7])
    for seed, teacher in zip(demo["seeds"].values(), [0.9, 1.0], strict=True):
        seed["teacher_zeroshot"] = {"sketch": teacher}

    def search(method: str, points: dict[str, list[float]], select: str = "training") -> dict:
        """Points named by their kd_weight (ERM: lr), each with its held-out accuracy on worlds 0 and 1."""
        name = "kd_weight" if method == "kd" else "lr"
        found = [
            {"set": {name: v}, "worlds": {str(w): {"ood_acc": a, "id_acc": 0.9, "source_val_loss": 0.1}
                                          for w, a in enumerate(accs)}}
            for v, accs in points.items()
        ]  # fmt: skip
        return {"command": f"python tools/search_demo.py --method {method}", "measured": "2026-12-04",
                "commit": "e" * 40, "uncommitted_changes": False, "machine": demo["machine"], "target": "sketch",
                "method": method, "select": select, "search": found, "chosen": 0}  # fmt: skip

    (tmp_path / "docs").mkdir()
    files = {
        "demo": demo,
        "erm": search("erm", {"2.7e-4": [0.60, 0.70], "1e-3": [0.50, 0.60]}),  # the demo's ERM rate first: 65.0
        "kd": search("kd", {"0.2": [0.62, 0.72], "2": [0.80, 0.90]}),  # the demo's 0.2: 67.0; the best: 85.0
        "loo": search("kd", {"0.2": [0.62, 0.72]}, select="leave-one-out"),
    }
    for name, record in files.items():
        (tmp_path / "docs" / f"{name}.json").write_text(json.dumps(record))
    monkeypatch.setattr(module, "REPO", tmp_path)
    block = "<!-- results docs/demo.json + docs/erm.json + docs/kd.json -->\nstale\n<!-- end results -->\n"
    lines = module.render(block).splitlines()
    assert lines[3] == "| ERM | 2 | 65.0 | 65.0 | lr 2.7e-4 | +0.0 |  |"
    # the teacher's 95.0 over the two worlds: ERM's shipped point is 30 points below it, the best KD point 20 above ERM
    assert lines[4] == "| KD | 2 | 67.0 | 85.0 | kd_weight 2 | +20.0 | 7% / 67% |"
    assert lines[6].endswith("worlds 0, 1 (training seed = world seed); the teacher's zero-shot accuracy there: 95.0.")
    with pytest.raises(SystemExit, match="pools training-domain searches on the same worlds"):
        module.render(block.replace("docs/kd.json", "docs/loo.json"))
    with pytest.raises(SystemExit, match="needs ERM's search"):
        module.render(block.replace("docs/erm.json + ", ""))
