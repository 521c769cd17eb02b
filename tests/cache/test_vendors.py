"""`vl2v query --vendor`: infinity-emb and the hosted APIs behind the same query job, cache and ledger, tested
against local servers that answer as each one documents (tests/cache/fake_vendors.py)."""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cache.pricing import Pixels, Price, estimated_tokens
from cache.store import EmbeddingCache
from cache.vendors import adapter_class
from cli.app import app
from common.weights import register_packaged_configs
from teacher_service.encoder import ClipEncoder

from ..conftest import TINY, make_tiny_checkpoint, serve_app, wait_until
from ..query_runs import pacs_args, spawn_query
from . import fake_vendors
from .fake_vendors import Embedder, Seen

pytestmark = pytest.mark.images

KEYS = {"infinity": None, "jina": "jina-key", "cohere": "cohere-key", "voyage": "voyage-key"}
ENV = {
    "JINA_API_KEY": "jina-key",
    "COHERE_API_KEY": "cohere-key",
    "VOYAGE_API_KEY": "voyage-key",
    "VL2V_API_KEY": "sk-x",
}


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> Embedder:
    register_packaged_configs()
    weights = make_tiny_checkpoint(tmp_path_factory.mktemp("vendor-weights") / "tiny.safetensors")
    return Embedder(ClipEncoder.load(TINY, str(weights), device="cpu"))


@contextmanager
def fake(name: str, embedder: Embedder, **options):
    seen = Seen()
    with serve_app(
        getattr(fake_vendors, name)(embedder, seen, **options), "/health" if name == "infinity" else "/"
    ) as url:
        yield url + ("/v1" if name in ("jina", "voyage") else ""), seen


def query(
    vendor: str, url: str, pacs_mini: Path, cache: Path, *extra: str, env: dict | None = None
) -> tuple[int, dict]:
    args = ["query", "--vendor", vendor, "--teacher-url", url, "--json", *pacs_args(pacs_mini, cache, *extra)]
    result = CliRunner().invoke(app, args, env=ENV | (env or {}))
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    return result.exit_code, (json.loads(lines[-1]) if lines else {"output": result.output})


def ledger(cache: Path):
    with EmbeddingCache.open(cache) as store:
        return store.ledger(), store.totals(), store.teacher


def pacs_sizes(pacs_mini: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(pacs_mini)): Image.open(p).size for p in pacs_mini.rglob("*.jpg")}


@pytest.mark.parametrize("vendor", ["infinity", "jina", "cohere", "voyage"])
def test_each_vendor_sells_a_budget_once_priced_as_it_publishes_and_the_dry_run_says_so(
    vendor, embedder, pacs_mini, tmp_path
):
    price = adapter_class(vendor).PRICE if vendor != "infinity" else Price(per_image=0.001)
    extra = ("--price", "per_image=0.001") if vendor == "infinity" else ()
    with fake(vendor, embedder) as (url, seen):
        code, plan = query(vendor, url, pacs_mini, tmp_path / "c", "--budget", "12", "--dry-run", *extra)
        assert code == 0 and plan["to_buy"] == 12, plan
        assert seen.requests == [], "a dry run buys nothing, not even the probe"
        code, report = query(vendor, url, pacs_mini, tmp_path / "c", "--budget", "12", *extra)
        assert code == 0 and report["paid_images"] == 12 and report["stopped"] is None, report
        assert seen.images == 12 + 1, "twelve images and the probe"
        rows, totals, teacher = ledger(tmp_path / "c")
        probe = [r for r in rows if r.kind == "probe"]
        assert len(probe) == 1 and totals.paid_images == 12 and totals.probe_requests == 1
        assert teacher["vendor"] == vendor and len(teacher["probe"]["image"]) == teacher["embedding_dim"]
        # The images' charge in the vendor's own unit, from each image's size: what the dry run said, to the digit;
        # the prompts' on the vendor's own token count, which the dry run can only estimate.
        image_rows = [r for r in rows if r.images and r.kind == "paid"]
        charged = sum(r.cost for r in image_rows)
        assert charged == pytest.approx(12 * price.image_cost(227, 227), rel=1e-9)
        assert plan["images_cost"] == pytest.approx(charged, rel=1e-6), (plan, charged)
        texts_charged = totals.cost - totals.probe_cost - charged
        assert plan["cost"] - plan["images_cost"] == pytest.approx(texts_charged, rel=0.25)
        text_rows = [r for r in rows if r.texts and r.kind == "paid"]
        assert sum(r.tokens for r in text_rows) != sum(estimated_tokens(p) for p in _texts(tmp_path / "c")), (
            "texts are charged on the vendor's own token count"
        )
        code, again = query(vendor, url, pacs_mini, tmp_path / "c", "--budget", "12", *extra)
        assert code == 0 and again["paid_images"] == 0 and seen.images == 12 + 2, "a rerun buys the probe alone"
        verify = CliRunner().invoke(app, ["cache", "verify", "--cache", str(tmp_path / "c")])
        assert verify.exit_code == 0, verify.output
        info = CliRunner().invoke(app, ["cache", "info", "--cache", str(tmp_path / "c"), "--json"], env={})
        summary = json.loads(info.stdout)
        assert info.exit_code == 0 and summary["teacher"]["vendor"] == vendor, info.output
        assert summary["paid_images"] == 12 and summary["probe_cost"] == pytest.approx(2 * totals.probe_cost), (
            "two runs, two probes"
        )


def _texts(cache: Path) -> list[str]:
    with EmbeddingCache.open(cache) as store:
        return list(store.texts())


def test_the_shapes_sent_are_the_documented_ones(embedder, pacs_mini, tmp_path):
    """The fakes validate every request strictly; here, what each adapter put in the fields that matter."""
    sent = {}
    for vendor in ("infinity", "jina", "cohere", "voyage"):
        with fake(vendor, embedder) as (url, seen):
            assert query(vendor, url, pacs_mini, tmp_path / vendor, "--budget", "2")[0] == 0
            sent[vendor] = seen.requests
    image = next(body for _, _, body in sent["infinity"] if body["modality"] == "image")
    assert image["model"] == "clip" and image["input"][0].startswith("data:image/")
    jina = next(body for _, _, body in sent["jina"] if "image" in body["input"][0])
    assert jina["model"] == "jina-clip-v2" and not jina["input"][0]["image"].startswith("data:"), "bare base64"
    cohere = next(body for _, _, body in sent["cohere"] if body["images"])
    assert cohere["input_type"] == "image" and cohere["embedding_types"] == ["float"] and cohere["texts"] is None
    voyage = next(body for _, _, body in sent["voyage"] if body["inputs"][0]["content"][0]["type"] == "image_base64")
    assert voyage["model"] == "voyage-multimodal-3" and voyage["inputs"][0]["content"][0]["image_base64"].startswith(
        "data:image/"
    )


def test_a_key_goes_to_its_own_vendor_and_to_no_other_host(embedder, pacs_mini, tmp_path):
    with fake("cohere", embedder) as (url, seen):
        assert query("cohere", url, pacs_mini, tmp_path / "c", "--budget", "4")[0] == 0
    assert {auth for _, auth, _ in seen.requests} == {"Bearer cohere-key"}, "only COHERE_API_KEY, to Cohere"
    code, out = query("jina", "http://203.0.113.9/v1", pacs_mini, tmp_path / "j", "--budget", "4")
    assert code != 0 and "JINA_API_KEY is only sent to api.jina.ai" in out["output"], out
    assert len(out["output"].strip().splitlines()) == 1
    code, out = query("voyage", "http://127.0.0.1:9/v1", pacs_mini, tmp_path / "v", env={"VOYAGE_API_KEY": ""})
    assert code != 0 and "set VOYAGE_API_KEY" in out["output"], out


def test_a_throttled_vendor_is_waited_for_as_its_retry_after_says(embedder, pacs_mini, tmp_path):
    with fake("voyage", embedder) as (url, seen):
        seen.throttle = 3
        code, report = query("voyage", url, pacs_mini, tmp_path / "c", "--budget", "6")
    assert code == 0 and report["paid_images"] == 6
    assert len(seen.requests) >= 3 + 2, "three 429s answered, then the probe and the purchases"


def test_the_money_cap_holds_exactly_and_ends_the_run_as_the_budget_does(embedder, pacs_mini, tmp_path):
    price: Pixels = adapter_class("voyage").PRICE
    one = price.image_cost(227, 227)
    with fake("voyage", embedder) as (url, seen):
        code, first = query("voyage", url, pacs_mini, tmp_path / "c", "--budget", "0")  # the probe and the prompts
        spent = ledger(tmp_path / "c")[1].cost
        cap = spent + 7.5 * one + price.image_cost(32, 32)  # the next run's probe, and seven and a half images
        code, report = query("voyage", url, pacs_mini, tmp_path / "c", "--max-spend", repr(cap))
    assert code == 0 and report["capped"] and report["paid_images"] == 7, report
    total = ledger(tmp_path / "c")[1].cost
    assert total <= cap < total + one, "as much as the cap pays for, and not one image more"


def test_a_teacher_whose_probe_moved_is_refused_in_one_line_and_nothing_is_stored(embedder, pacs_mini, tmp_path):
    with fake("infinity", embedder) as (url, seen):
        assert query("infinity", url, pacs_mini, tmp_path / "c", "--budget", "4")[0] == 0
        original = embedder.encoder
        try:
            other = make_tiny_checkpoint(tmp_path / "other.safetensors", seed=1)
            embedder.encoder = ClipEncoder.load(TINY, str(other), device="cpu")  # new weights, the same model id
            code, out = query("infinity", url, pacs_mini, tmp_path / "c", "--budget", "8")
        finally:
            embedder.encoder = original
    assert code != 0 and "answers the probe differently" in out["output"], out
    assert len(out["output"].strip().splitlines()) == 1
    assert ledger(tmp_path / "c")[1].paid_images == 4, "nothing bought from the changed teacher is kept"


def test_infinitys_url_prefix_is_found_and_a_model_it_does_not_serve_is_named(embedder, pacs_mini, tmp_path):
    with fake("infinity", embedder, prefix="/v1") as (url, seen):
        code, report = query("infinity", url, pacs_mini, tmp_path / "c", "--budget", "2")
        assert code == 0 and report["paid_images"] == 2 and seen.requests[0][0] == "/embeddings"
        code, out = query("infinity", url, pacs_mini, tmp_path / "d", "--vendor-model", "vit", "--budget", "2")
    assert code != 0 and "does not serve 'vit'; it serves ['clip']" in out["output"]


class Slow(Embedder):
    def images(self, data):
        time.sleep(0.4)
        return super().images(data)


def test_killed_mid_run_a_resumed_run_rebuys_at_most_what_was_in_flight_and_counts_it(embedder, pacs_mini, tmp_path):
    """No idempotency keys at infinity: what a crash left in flight is bought again. The bound: --concurrency x
    --batch-size images; the ledger counts the first sends as possibly paid, so it never under-counts the bill."""
    cache, budget, in_flight = tmp_path / "c", 40, 2 * 4
    options = ("--vendor", "infinity", "--budget", str(budget), "--batch-size", "4", "--concurrency", "2")
    with fake("infinity", Slow(embedder.encoder)) as (url, seen):
        process = spawn_query(url, pacs_mini, cache, *options)
        try:
            wait_until(lambda: seen.images >= 14, what="a few batches bought", timeout=120)
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        done = spawn_query(url, pacs_mini, cache, *options)
        out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    totals = ledger(cache)[1]
    billed = seen.images - 2  # the vendor's own count, less the two runs' probes
    assert totals.paid_images == budget, "the budget holds on what may have been billed, re-bought images included"
    assert billed <= totals.paid_images, "the ledger never counts less than the vendor billed"
    assert billed - totals.held_images <= in_flight, "bought twice: at most what was in flight at the kill"
    assert totals.held_images >= budget - in_flight and totals.unrecovered_images <= in_flight


def test_a_cache_bought_from_infinity_trains_a_student(embedder, pacs_mini, tmp_path):
    from ..student.test_distill import distill_args, run_cli

    with fake("infinity", embedder) as (url, _):
        assert query("infinity", url, pacs_mini, tmp_path / "c")[0] == 0
    code, output = run_cli(*distill_args(tmp_path / "c", tmp_path / "run", "kd"))
    assert code == 0, output
    assert (tmp_path / "run").rglob("model.safetensors")


def test_a_refused_key_stops_the_run_with_the_key_refused_exit_code_and_nothing_paid(embedder, pacs_mini, tmp_path):
    with fake("jina", embedder) as (url, seen):
        code, report = query("jina", url, pacs_mini, tmp_path / "c", "--budget", "4", env={"JINA_API_KEY": "wrong"})
    assert code == 5, report  # exit code 5: the vendor refused the key, as with vl2v's own vendor
    assert seen.requests == [] and seen.images == 0
