"""`vl2v query` against the real service on pacs-mini: budgets, resumes, duplicates, exclusions, skips, stops.

Bills are checked on the vendor's own ledger (the service's SQLite store), never on the client's word.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
from collections import Counter

import pytest
from PIL import Image
from typer.testing import CliRunner

from cache.store import EmbeddingCache
from cli.app import app
from cli.exit_codes import AUTH_FAILED, ERROR, INTERRUPTED, QUOTA_EXHAUSTED, VENDOR_UNREACHABLE
from teacher_service.runtime import load_encoder

from ..conftest import KEYS, make_tiny_checkpoint, run_service, wait_until
from ..query_runs import assert_paid_once, pacs_args, paid_images, slow_encoder, spawn_query

CAROL = "carol:sk-carol:1000"


@pytest.fixture
def vendor(make_settings):
    with run_service(make_settings(api_keys=f"{KEYS},{CAROL}", max_batch=32)) as service:
        yield service


def query(vendor, *args: str, key: str = "sk-carol") -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["query", "--teacher-url", vendor.url, "--json", *args], env={"VL2V_API_KEY": key})
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    return result.exit_code, (json.loads(lines[-1]) if lines else {"output": result.output})


def cli(*args: str, key: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"VL2V_API_KEY": key} if key else None)
    return result.exit_code, result.output


def server_images(vendor, name: str = "carol") -> int:
    return paid_images(vendor.state.store.ledger(), name)


def test_the_budget_is_never_exceeded_on_the_vendors_ledger_and_a_rerun_pays_nothing(vendor, pacs_mini, tmp_path):
    code, report = query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "150", "--batch-size", "16"))
    assert code == 0, report
    assert report["paid_images"] == 150 and report["paid_texts"] == 84 and server_images(vendor) == 150
    ledger_rows = len(vendor.state.store.ledger())

    code, again = query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "150"))
    assert code == 0 and again["paid_images"] == 0 and again["paid_texts"] == 0 and again["cost"] == 0
    assert len(vendor.state.store.ledger()) == ledger_rows, "a second run must send nothing paid"

    code, more = query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "200"))
    assert more["paid_images"] == 50 and server_images(vendor) == 200  # the budget is cumulative


def test_stratified_selection_is_balanced_and_info_reports_it(vendor, pacs_mini, tmp_path):
    query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "100"))
    code, output = cli("cache", "info", str(tmp_path / "c"), "--json")
    info = json.loads(output)
    assert code == 0
    per_cell = [n for classes in info["images_by_class"].values() for n in classes.values()]
    assert len(per_cell) == 28 and max(per_cell) - min(per_cell) <= 1
    assert sum(info["images_by_domain"].values()) == 100
    assert (info["paid_images"], info["paid_texts"], info["skipped"]) == (100, 84, 0)
    assert info["cost"] == pytest.approx(sum(r["cost"] for r in vendor.state.store.ledger()) / 1e9)
    assert info["teacher"]["id"] == "vl2v-tiny" and info["dataset"] == "pacs"
    assert "error" in info["vendor"]  # no key: not reconciled, and it says so

    code, output = cli("cache", "info", str(tmp_path / "c"), "--json", "--teacher-url", vendor.url, key="sk-carol")
    vendor_side = json.loads(output)["vendor"]
    assert (vendor_side["images"], vendor_side["texts"]) == (info["paid_images"], info["paid_texts"])
    assert vendor_side["spent"] == pytest.approx(info["cost"])


def test_dry_run_buys_nothing_and_prices_the_plan(vendor, pacs_mini, tmp_path):
    code, plan = query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "40", "--dry-run"))
    assert code == 0 and plan["dry_run"] and plan["to_buy"] == 40 and plan["texts_to_buy"] == 84
    assert plan["cost"] == pytest.approx(40 * 0.0001 + plan["cost"] - 40 * 0.0001) and plan["cost"] > 40 * 0.0001
    assert vendor.state.store.ledger() == [] and not (tmp_path / "c").exists()


def test_duplicates_are_paid_once(vendor, pacs_mini, tmp_path):
    root = tmp_path / "data"
    for domain in ("photo", "sketch"):
        shutil.copytree(pacs_mini / domain / "dog", root / domain / "dog")
    twin = next((root / "photo" / "dog").glob("*.jpg"))
    shutil.copy(twin, root / "sketch" / "dog" / "twin.jpg")
    shutil.copy(twin, root / "photo" / "dog" / "twin_copy.jpg")
    code, report = query(vendor, "--dataset", "imagefolder", "--data-dir", str(root), "--cache", str(tmp_path / "c"))
    assert code == 0 and report["duplicates"] == 2
    assert server_images(vendor) == report["paid_images"] == 80
    with EmbeddingCache.open(tmp_path / "c") as cache:
        paths = dict(cache.items())[hashlib.sha256(twin.read_bytes()).hexdigest()]
    assert sorted(paths) == sorted([f"photo/dog/{twin.name}", "photo/dog/twin_copy.jpg", "sketch/dog/twin.jpg"])


def test_an_excluded_domain_is_never_sent(make_settings, pacs_mini, tmp_path):
    seen: set[str] = set()

    def recording_factory(settings):
        encoder = load_encoder(settings)
        preprocess = encoder.preprocess_image

        def record(image):
            seen.add(hashlib.sha256(image.tobytes()).hexdigest())
            return preprocess(image)

        encoder.preprocess_image = record
        return encoder

    with run_service(make_settings(api_keys=CAROL), recording_factory) as vendor:
        code, report = query(
            vendor, *pacs_args(pacs_mini, tmp_path / "c", "--exclude-domain", "sketch", "--budget", "300")
        )
    assert code == 0 and report["paid_images"] == 300 and len(seen) == 300
    sketches = {
        hashlib.sha256(Image.open(p).convert("RGB").tobytes()).hexdigest()
        for p in (pacs_mini / "sketch").rglob("*.png")
    }
    assert not seen & sketches, "the vendor decoded an image of the excluded domain"
    assert "sketch" not in report["by_domain"]


def test_an_unknown_excluded_domain_is_an_error(vendor, pacs_mini, tmp_path):
    code, output = cli(
        "query",
        *pacs_args(pacs_mini, tmp_path / "c", "--exclude-domain", "sketches", "--teacher-url", vendor.url),
        key="sk-carol",
    )
    assert code == ERROR and "not among the domains" in output


def test_corrupt_and_vendor_rejected_files_are_skipped_with_reasons(vendor, pacs_mini, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(pacs_mini / "photo" / "dog", root / "photo" / "dog")
    good = next((root / "photo" / "dog").glob("*.jpg")).read_bytes()
    (root / "photo" / "dog" / "corrupt.jpg").write_bytes(good[: len(good) // 2])
    sliver = io.BytesIO()
    Image.new("RGB", (2000, 20), "white").save(sliver, "PNG")  # decodes here; the vendor refuses 100:1
    (root / "photo" / "dog" / "sliver.png").write_bytes(sliver.getvalue())
    code, report = query(
        vendor, "--dataset", "imagefolder", "--data-dir", str(root), "--cache", str(tmp_path / "c"), "--batch-size", "8"
    )
    assert code == 0 and report["skipped"] == 2 and report["paid_images"] == 40 == server_images(vendor)
    with EmbeddingCache.open(tmp_path / "c") as cache:
        reasons = {s["paths"][0]: (s["stage"], s["reason"]) for s in cache.skipped().values()}
    assert reasons["photo/dog/corrupt.jpg"][0] == "local" and "undecodable" in reasons["photo/dog/corrupt.jpg"][1]
    assert reasons["photo/dog/sliver.png"][0] == "vendor" and "aspect ratio" in reasons["photo/dog/sliver.png"][1]
    assert cli("cache", "verify", str(tmp_path / "c"))[0] == 0


def test_an_exhausted_balance_stops_cleanly_keeping_what_was_paid(make_settings, pacs_mini, tmp_path):
    # 0.0135 USD buys the 84 prompts (about 0.01 at 0.02 per 1k tokens) and then a few dozen images.
    with run_service(make_settings(api_keys="dave:sk-dave:0.0135")) as vendor:
        code, report = query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--batch-size", "2"), key="sk-dave")
        balance = vendor.session("sk-dave").get(f"{vendor.url}/v1/usage", timeout=10).json()["balance"]
        assert code == QUOTA_EXHAUSTED and "balance is exhausted" in report["stopped"]
        assert report["paid_texts"] == 84 and 0 < report["paid_images"] == server_images(vendor, "dave")
        assert 0 <= balance < 2 * 0.0001, "it stops only when the next batch of two no longer fits"
    code, output = cli("cache", "verify", str(tmp_path / "c"))
    assert code == 0, output


def test_a_refused_key_exits_5_and_an_unreachable_vendor_exits_4(vendor, pacs_mini, tmp_path):
    code, _ = query(vendor, *pacs_args(pacs_mini, tmp_path / "a"), key="sk-wrong")
    assert code == AUTH_FAILED
    result = CliRunner().invoke(
        app,
        ["query", *pacs_args(pacs_mini, tmp_path / "b"), "--teacher-url", "http://127.0.0.1:9", "--max-retries", "1"],
        env={"VL2V_API_KEY": "sk"},
    )
    assert result.exit_code == VENDOR_UNREACHABLE and "gave up after 1 attempts" in result.output
    assert cli("query", *pacs_args(pacs_mini, tmp_path / "c"))[1].count("no API key") == 1


def test_a_cache_of_another_teacher_is_refused(make_settings, pacs_mini, tmp_path):
    with run_service(make_settings(api_keys=CAROL)) as vendor:
        assert query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "10"))[0] == 0
    other = make_tiny_checkpoint(tmp_path / "other.safetensors", seed=1)
    with run_service(make_settings(api_keys=CAROL, pretrained=str(other), state_dir=tmp_path / "s2")) as vendor:
        code, output = cli("query", *pacs_args(pacs_mini, tmp_path / "c", "--teacher-url", vendor.url), key="sk-carol")
    assert code == ERROR and "Use another --cache" in output


def test_export_writes_plain_arrays(vendor, pacs_mini, tmp_path):
    query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "30"))
    code, output = cli("cache", "export", str(tmp_path / "c"), "--format", "npz", "--out", str(tmp_path / "e.npz"))
    assert code == 0, output
    import numpy as np

    arrays = np.load(tmp_path / "e.npz")
    assert arrays["image_embeddings"].shape == (30, 32) and len(arrays["paths"]) == 30
    assert set(arrays["domains"]) <= {"art_painting", "cartoon", "photo", "sketch"}
    assert arrays["labels"].min() >= 0 and list(arrays["class_names"])[0] == "dog"
    assert arrays["text_embeddings"].shape == (84, 32) and "a photo of a dog" in set(arrays["prompts"])


def test_verify_finds_broken_embeddings_and_unreadable_files(vendor, pacs_mini, tmp_path):
    query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "20"))
    assert cli("cache", "verify", str(tmp_path / "c"))[0] == 0
    with EmbeddingCache.open(tmp_path / "c", write=True) as cache:
        key = next(k for k, _ in cache.items())
        db = cache._db["image"]
        stored = bytearray(cache._get("image", key.encode()))
        stored[0] ^= 0x01  # the lowest mantissa bit of one value: far too small for the norm check to notice
        cache._write(lambda txn: txn.put(key.encode(), bytes(stored), db=db))
        zeroed = next(k for k, _ in cache.items() if k != key)
        cache._write(lambda txn: txn.put(zeroed.encode(), bytes(4 * 33), db=db))
    code, output = cli("cache", "verify", str(tmp_path / "c"))
    assert code == ERROR and f"image {key}: checksum mismatch" in output
    assert f"image {zeroed}: checksum mismatch" in output and f"image {zeroed[:12]}: norm 0.0000" in output

    data = tmp_path / "c" / "data.mdb"
    data.write_bytes(data.read_bytes()[:4096])
    code, output = cli("cache", "verify", str(tmp_path / "c"), "--json")
    assert code == ERROR and json.loads(output)["ok"] is False


# -- crashes and interruptions: the real console script in a subprocess --------------------------------------


@pytest.fixture
def slow_vendor(make_settings):
    """A vendor whose model takes 30 ms per batch, so a run lasts long enough to be interrupted mid-way."""
    with run_service(make_settings(api_keys=CAROL), slow_encoder(0.03)) as service:
        yield service


def test_kill_9_mid_run_then_resume_pays_each_image_once(slow_vendor, pacs_mini, tmp_path):
    cache = tmp_path / "c"
    process = spawn_query(slow_vendor.url, pacs_mini, cache, "--batch-size", "4")
    wait_until(lambda: server_images(slow_vendor) >= 40, what="some images to be paid", timeout=120)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    paid_before_resume = server_images(slow_vendor)
    assert paid_before_resume < 1120

    process = spawn_query(slow_vendor.url, pacs_mini, cache, "--batch-size", "4")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert cli("cache", "verify", str(cache))[0] == 0
    assert assert_paid_once(cache, slow_vendor.state.store.ledger()) == 1120


def test_ctrl_c_saves_everything_paid_and_exits_130(slow_vendor, pacs_mini, tmp_path):
    process = spawn_query(slow_vendor.url, pacs_mini, tmp_path / "c", "--batch-size", "4")
    wait_until(lambda: server_images(slow_vendor) >= 20, what="some images to be paid", timeout=120)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == INTERRUPTED, err
    report = json.loads(out.splitlines()[-1])
    with EmbeddingCache.open(tmp_path / "c") as store:
        assert store.pending() == {} and store.counts()["image"] == server_images(slow_vendor)
    assert report["paid_images"] == server_images(slow_vendor)
    assert cli("cache", "verify", str(tmp_path / "c"))[0] == 0


def test_a_second_writer_is_refused_while_a_query_runs(slow_vendor, pacs_mini, tmp_path):
    process = spawn_query(slow_vendor.url, pacs_mini, tmp_path / "c", "--batch-size", "4")
    try:
        wait_until(lambda: server_images(slow_vendor) >= 8, what="the first run to start paying", timeout=120)
        code, output = cli(
            "query", *pacs_args(pacs_mini, tmp_path / "c", "--teacher-url", slow_vendor.url), key="sk-carol"
        )
        assert code == ERROR and "is being written by pid" in output
        code, output = cli("cache", "info", str(tmp_path / "c"), "--json")  # readers never block
        assert code == 0 and json.loads(output)["images"] > 0
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)
    assert Counter(r["key_name"] for r in slow_vendor.state.store.ledger())["carol"] > 0


def test_the_headline_command_needs_no_flag_beyond_dataset_and_budget(vendor, pacs_mini, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "PACS").symlink_to(pacs_mini)  # the DomainBed layout under the default ./data
    result = CliRunner().invoke(
        app,
        ["query", "--dataset", "pacs", "--budget", "12"],
        env={"VL2V_API_KEY": "sk-carol", "VL2V_TEACHER_URL": vendor.url},
    )
    assert result.exit_code == 0, result.output
    assert "images paid" in result.output and server_images(vendor) == 12
    with EmbeddingCache.open(tmp_path / "cache") as cache:
        assert cache.counts()["image"] == 12
