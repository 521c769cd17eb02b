"""`vl2v query --select kcenter|typiclust`: the student's own features of every image, computed once per content
before anything is bought, order the purchase; re-running buys nothing, raising the budget buys only new images,
and the cache records the order it chose."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cache.store import EmbeddingCache
from cli.app import app
from student.config import FeatureSpec, features_path
from student.features import load_features

from ..conftest import KEYS, run_service
from ..query_runs import pacs_args, paid_images

pytestmark = pytest.mark.images

SPEC = FeatureSpec(image_size=64)  # EfficientNet-Lite0 with the offline ImageNet weights, at 64 px: fast on a CPU
FEATURES = ("--feature-size", "64")


@pytest.fixture
def vendor(make_settings):
    with run_service(make_settings(api_keys=f"{KEYS},carol:sk-carol:1000", max_batch=32)) as live:
        yield live


def query(vendor, *args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(
        app, ["query", "--teacher-url", vendor.url, "--json", *args], env={"VL2V_API_KEY": "sk-carol"}
    )
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    return result.exit_code, (json.loads(lines[-1]) if lines else {"output": result.output})


@pytest.mark.parametrize("strategy", ["kcenter", "typiclust"])
def test_a_feature_strategy_buys_its_order_once_and_extends_it(vendor, pacs_mini, tmp_path, strategy):
    cache = tmp_path / "c"
    args = (*pacs_args(pacs_mini, cache), "--select", strategy, *FEATURES)
    code, first = query(vendor, *args, "--budget", "24")
    assert code == 0 and first["paid_images"] == 24, first
    rows, meta = load_features(features_path(cache, SPEC), SPEC)
    assert meta["images"] == len(rows) > 1000, "every image's features, kept beside the cache"
    mtime = features_path(cache, SPEC).stat().st_mtime_ns
    code, again = query(vendor, *args, "--budget", "24")
    assert code == 0 and again["paid_images"] == 0, "the same budget again buys nothing"
    assert features_path(cache, SPEC).stat().st_mtime_ns == mtime, "features are not computed twice"
    code, more = query(vendor, *args, "--budget", "40")
    assert code == 0 and more["paid_images"] == 16, "a larger budget buys only the new images"
    assert paid_images(vendor.state.store.ledger(), "carol") == 40, "the vendor's own bill"
    with EmbeddingCache.open(cache) as store:
        runs = store.selections
        held = {k for k, _ in store.items()}
    assert [len(r["keys"]) for r in runs] == [24, 16] and {r["strategy"] for r in runs} == {strategy}
    assert set(runs[0]["keys"]) | set(runs[1]["keys"]) == held, "every image bought, in the order chosen"
    info = CliRunner().invoke(app, ["cache", "info", "--cache", str(cache), "--json"])
    shown = json.loads(info.stdout)["selection"]
    assert [(r["strategy"], r["features"], r["keys"]) for r in shown] == [
        (strategy, SPEC.tag, runs[0]["keys"]),
        (strategy, SPEC.tag, runs[1]["keys"]),
    ]
    table = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["cache", "info", "--cache", str(cache)]).output
    assert f"{strategy} (seed 0, features {SPEC.tag}): 24 images" in table


def test_kcenter_spreads_a_small_budget_wider_than_random(vendor, pacs_mini, tmp_path):
    """Its reason to exist: the images it buys cover the student's feature space with a smaller radius."""
    radius = {}
    for strategy in ("kcenter", "random"):
        cache = tmp_path / strategy
        code, report = query(vendor, *pacs_args(pacs_mini, cache), "--select", strategy, *FEATURES, "--budget", "16")
        assert code == 0, report
        rows, _ = (
            load_features(features_path(tmp_path / "kcenter", SPEC), SPEC)
            if strategy == "random"
            else (load_features(features_path(cache, SPEC), SPEC))
        )
        with EmbeddingCache.open(cache) as store:
            chosen = np.stack([rows[k] for k, _ in store.items()])
        everything = np.stack(list(rows.values()))
        distance = ((everything[:, None, :] - chosen[None, :, :]) ** 2).sum(-1).min(1)
        radius[strategy] = float(np.sqrt(distance.max()))
    assert radius["kcenter"] < radius["random"], radius


def test_bad_selection_input_is_one_line_and_pays_nothing(vendor, pacs_mini, tmp_path):
    cache = tmp_path / "c"
    code, out = query(vendor, *pacs_args(pacs_mini, cache), "--select", "greedy")
    assert code != 0 and "unknown selection 'greedy'" in out["output"] and len(out["output"].splitlines()) == 1
    code, out = query(vendor, *pacs_args(pacs_mini, cache), "--budget", "5000")
    assert code != 0 and "--budget 5000 is more than the 1120 images the dataset offers" in out["output"]
    assert query(vendor, *pacs_args(pacs_mini, cache), "--select", "kcenter", *FEATURES, "--budget", "4")[0] == 0
    code, out = query(
        vendor, *pacs_args(pacs_mini, cache), "--select", "kcenter", "--feature-size", "48", "--budget", "8",
        "--features", str(features_path(cache, SPEC)),
    )  # fmt: skip
    assert code != 0 and "holds features of" in out["output"] and "another student's features" in out["output"]
    assert paid_images(vendor.state.store.ledger(), "carol") == 4, "nothing paid for bad input"


def test_rounds_buy_the_budget_in_shares_the_later_ones_by_the_probe(vendor, pacs_mini, tmp_path):
    cache = tmp_path / "c"
    args = (*pacs_args(pacs_mini, cache), *FEATURES, "--rounds", "3", "--acquire", "disagreement")
    code, report = query(vendor, *args, "--budget", "30")
    assert code == 0 and report["paid_images"] == 30, report
    with EmbeddingCache.open(cache) as store:
        runs = store.selections
    assert [(r["strategy"], len(r["keys"])) for r in runs] == [
        ("stratified", 10),
        ("uncertainty", 10),
        ("uncertainty", 10),
    ]
    code, again = query(vendor, *args, "--budget", "30")
    assert code == 0 and again["paid_images"] == 0, "the same budget again buys nothing"
    code, out = query(vendor, *args[:-2], "--acquire", "margin", "--budget", "40")
    assert code != 0 and "--acquire 'margin' is not one of" in out["output"]
    assert paid_images(vendor.state.store.ledger(), "carol") == 30
