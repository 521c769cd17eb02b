"""A new user's first hour with `vl2v query` and `cache info`: a small balance, a vendor that is not running, a URL
without a scheme, images another cache already bought, and tables that read as sentences."""

from __future__ import annotations

import json
import re
import shutil
import time

from typer.testing import CliRunner

from cache.store import EmbeddingCache
from cli.app import app
from cli.exit_codes import ERROR, QUOTA_EXHAUSTED, VENDOR_UNREACHABLE

from ..conftest import run_service
from ..query_runs import pacs_args, paid_images
from ..teacher_service.test_idempotency_and_ledger import post
from .test_query import CAROL, cli, query


def test_a_balance_smaller_than_one_batch_buys_what_it_can_then_stops(make_settings, pacs_mini, tmp_path):
    settings = make_settings(api_keys="carol:sk-carol:0.0005", price_per_1k_tokens=0.0, price_per_image=0.0001)
    with run_service(settings) as vendor:
        code, report = query(vendor, *pacs_args(pacs_mini, tmp_path / "c", "--batch-size", "32"))
        assert code == QUOTA_EXHAUSTED, report
        assert report["paid_images"] == 5 and paid_images(vendor.state.store.ledger()) == 5
        assert "balance is exhausted" in report["stopped"]
    with EmbeddingCache.open(tmp_path / "c") as cache:
        assert cache.counts()["image"] == 5 and cache.pending() == {}


def test_a_vendor_that_is_not_running_fails_fast_in_short_lines(tmp_path, pacs_mini):
    started = time.monotonic()
    code, output = cli("query", *pacs_args(pacs_mini, tmp_path / "c"), "--teacher-url", "http://127.0.0.1:9", key="k")
    assert code == VENDOR_UNREACHABLE and time.monotonic() - started < 10
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert any(
        "cannot connect to http://127.0.0.1:9 (connection refused); is the vendor running?" in ln for ln in lines
    )
    assert all(len(ln) < 250 for ln in lines) and "HTTPConnection" not in output and "urllib3" not in output


def test_a_url_without_a_scheme_gets_a_clear_message(tmp_path, pacs_mini):
    code, output = cli("query", *pacs_args(pacs_mini, tmp_path / "c"), "--teacher-url", "localhost:8000", key="k")
    assert code == ERROR and "needs a scheme and a host, e.g. http://localhost:8000" in output


def test_images_another_cache_bought_under_the_same_key_are_recorded_free(make_settings, pacs_mini, tmp_path):
    with run_service(make_settings(api_keys=CAROL)) as vendor:
        code, first = query(vendor, *pacs_args(pacs_mini, tmp_path / "one", "--budget", "40"))
        assert code == 0 and first["paid_images"] == 40
        code, second = query(vendor, *pacs_args(pacs_mini, tmp_path / "two", "--budget", "40"))
        assert code == 0, second
        assert (second["paid_images"], second["free_images"], second["cost"]) == (0, 40, 0.0)
        assert paid_images(vendor.state.store.ledger()) == 40, "the vendor charged once"
    code, output = cli("cache", "info", str(tmp_path / "two"), "--json")
    info = json.loads(output)
    assert (info["paid_images"], info["free_images"], info["cost"], info["images"]) == (0, 40, 0.0, 40)
    assert cli("cache", "verify", str(tmp_path / "two"))[0] == 0


def test_the_vendor_keeps_answers_for_replay_only_as_long_as_it_says(make_settings):
    with run_service(make_settings(idempotency_ttl_s=1.0)) as vendor:
        card = vendor.session().get(f"{vendor.url}/v1/models", timeout=10).json()["data"][0]
        assert card["idempotency_ttl_s"] == 1.0
        assert post(vendor, ["a dog"], "k-1").headers["x-request-cost"] != "0"
        assert post(vendor, ["a dog"], "k-1").headers["Idempotent-Replayed"] == "true"
        time.sleep(1.2)
        late = post(vendor, ["a dog"], "k-1")
        assert late.status_code == 200 and "Idempotent-Replayed" not in late.headers, "expired: a new request"
        assert len(vendor.state.store.ledger()) == 2


def test_tables_read_as_sentences_not_python(make_settings, pacs_mini, tmp_path):
    data = tmp_path / "folder"
    for domain in ("photo", "sketch"):
        for name in ("dog", "horse"):
            (data / domain / name).mkdir(parents=True)
            for image in sorted((pacs_mini / domain / name).iterdir())[:2]:
                shutil.copy(image, data / domain / name / image.name)
    (data / "photo" / "dog" / "broken.jpg").write_bytes(b"not an image")
    args = ["--dataset", "imagefolder", "--data-dir", str(data), "--cache", str(tmp_path / "c")]
    with run_service(make_settings(api_keys=CAROL, price_per_image=0.0001, price_per_1k_tokens=0.00002)) as vendor:
        code, bought = cli("query", "--teacher-url", vendor.url, *args, key="sk-carol")
    assert code == 0, bought
    code, info = cli("cache", "info", str(tmp_path / "c"))
    assert "1 (undecodable here 1)" in info and "budget used (all runs)" in bought and "(no cap)" in bought
    for output in (bought, info):
        assert "{" not in output and "None" not in output and " none " not in output
        amounts = [w for w in output.split() if re.fullmatch(r"\d+\.\d+", w)]
        assert amounts and all(len(a.split(".")[1]) <= 6 for a in amounts), "money: six decimals, no float noise"


def test_query_warns_when_the_teacher_it_bought_from_is_near_chance(make_settings, pacs_mini, tmp_path):
    with run_service(make_settings(api_keys=CAROL)) as vendor:
        args = ["query", "--teacher-url", vendor.url, *pacs_args(pacs_mini, tmp_path / "c", "--budget", "56")]
        result = CliRunner().invoke(app, [*args, "--json"], env={"VL2V_API_KEY": "sk-carol"})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.splitlines()[-1])
    assert 0 <= report["teacher_zeroshot"] < 1 / 7 + 0.1 * 6 / 7, "the tiny test teacher has random weights"
    assert "warning: the teacher's zero-shot accuracy on pacs is" in result.stderr
    assert "near chance (14.3% for 7 classes)" in result.stderr


def test_a_class_missing_from_a_domain_is_named_by_query_and_by_cache_info(make_settings, pacs_mini, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(pacs_mini, data)
    shutil.rmtree(data / "sketch" / "horse")
    with run_service(make_settings(api_keys=CAROL)) as vendor:
        code, report = query(vendor, "--dataset", "pacs", "--data-dir", str(data), "--cache", str(tmp_path / "c"))
    assert code == 0, report
    assert any("domain sketch has no images of 1 class(es): ['horse']" in r.getMessage() for r in caplog.records)
    result = CliRunner().invoke(app, ["cache", "info", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "warning: no image of class 'horse' in domain 'sketch' is cached" in result.stderr
    table = result.stdout[result.stdout.index("images by domain and class") :]
    horse = next(line for line in table.splitlines() if " horse " in line)
    assert [int(n) for n in re.findall(r"\d+", horse)] == [40, 40, 40, 0, 120]  # art, cartoon, photo, sketch, all
    dog = next(line for line in table.splitlines() if " dog " in line)
    assert [int(n) for n in re.findall(r"\d+", dog)] == [40, 40, 40, 40, 160]
