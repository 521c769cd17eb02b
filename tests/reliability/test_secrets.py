"""Secrets stay secret: a billing database's password appears in no log line or error, in any form libpq accepts,
and the benches and tests hand API keys to their children through the environment or a file, never argv."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from common.errors import ConfigError
from teacher_service import database_url
from teacher_service.billing import open_billing
from teacher_service.local import free_port

from ..conftest import run_service

PASSWORD = "Hunter2:s3cr@t/x?y"  # every character a URL's userinfo can trip over
PIECES = ("Hunter2", "s3cr", "t/x", "x?y")


def forms(host: str, port: int, database: str) -> dict[str, str]:
    """One password, written every way libpq reads one."""
    encoded = quote(PASSWORD, safe="")
    return {
        "URL, raw userinfo": f"postgresql://postgres:{PASSWORD}@{host}:{port}/{database}",
        "URL, encoded userinfo": f"postgresql://postgres:{encoded}@{host}:{port}/{database}",
        "URL, query parameter": f"postgres://postgres@{host}:{port}/{database}?password={encoded}&sslmode=disable",
        "keyword/value": f"host={host} port={port} dbname={database} user=postgres password='{PASSWORD}'",
    }


def assert_hidden(text: str) -> None:
    assert not any(piece in text for piece in PIECES), text


@pytest.mark.parametrize("form", list(forms("h", 1, "d")))
def test_a_database_url_is_shown_as_host_port_database_and_user_only(form):
    url = forms("db.example", 5433, "ledger")[form]
    assert database_url.describe(url) == "postgresql://postgres@db.example:5433/ledger"
    assert database_url.parts(url)["password"] == PASSWORD, "libpq is handed the password the user wrote"
    assert_hidden(database_url.scrub(f"driver says: {url} / {PASSWORD} / {quote(PASSWORD)}", url))


@pytest.mark.parametrize("form", list(forms("h", 1, "d")))
def test_no_password_in_start_up_errors_or_the_ledger_log_lines(form, make_settings, postgres, caplog):
    caplog.set_level(logging.DEBUG)
    closed = free_port()
    with pytest.raises(ConfigError) as refused:
        open_billing(make_settings(database_url=forms("127.0.0.1", closed, "ledger")[form]))
    assert f"127.0.0.1:{closed}/ledger" in str(refused.value)
    assert_hidden(str(refused.value))

    database = postgres.create_database().rsplit("/", 1)[1]
    url = forms("127.0.0.1", postgres.port, database)[form]  # the test server trusts loopback: any password works
    with run_service(make_settings(database_url=url)) as service:
        assert str(service.state.store.db) == f"postgresql://postgres@127.0.0.1:{postgres.port}/{database}"
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"127.0.0.1:{postgres.port}/{database}" in line for line in lines), "the ledger is named"
    assert_hidden("\n".join(lines))


def test_a_password_in_the_drivers_own_error_is_hidden(make_settings, monkeypatch):
    import psycopg

    url = forms("127.0.0.1", 1, "ledger")["URL, raw userinfo"]

    def refuses(conninfo, **kwargs):
        raise psycopg.OperationalError(f'connection to "{conninfo}" failed: password "{PASSWORD}" refused')

    monkeypatch.setattr(psycopg, "connect", refuses)
    with pytest.raises(ConfigError) as refused:
        open_billing(make_settings(database_url=url))
    assert "refused" in str(refused.value)
    assert_hidden(str(refused.value))


def test_an_unparseable_connection_string_is_refused_without_quoting_it(make_settings):
    for url in ("host=x password=se cret", "mysql://u:Hunter2@h/d"):
        with pytest.raises(ConfigError) as refused:
            open_billing(make_settings(database_url=url))
        assert "cret" not in str(refused.value) and "Hunter2" not in str(refused.value)


def test_vl2v_serve_names_the_database_without_its_password(tmp_path, tiny_checkpoint):
    url = forms("127.0.0.1", free_port(), "ledger")["URL, query parameter"]
    env = {**os.environ, "VL2V_API_KEYS": "alice:sk-alice-secret:10", "VL2V_DATABASE_URL": url}
    args = ["serve", "--model", "vl2v-tiny", "--pretrained", str(tiny_checkpoint), "--state-dir", str(tmp_path)]
    result = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "postgresql://postgres@127.0.0.1:" in lines[0], result.stderr
    assert_hidden(result.stderr + result.stdout)


def _command_lines() -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def test_the_bench_load_clients_get_the_key_from_a_file_not_argv(make_settings):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.harness import load

    with run_service(make_settings(rate_limit_requests=0)) as service:
        seen: list[str] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                seen.extend(line for line in _command_lines() if "client.py" in line)
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            result = load(
                f"{service.url}/v1/embeddings",
                {"Authorization": "Bearer sk-alice-secret"},
                [{"model": "vl2v-tiny", "input": ["a dog"]}],
                per_request=1,
                seconds=0.5,
            )
        finally:
            stop.set()
            watcher.join()
    assert result["requests"] > 0, "the clients authenticated"
    assert seen, "the clients were seen running"
    assert not any("sk-alice-secret" in line for line in seen), seen[:1]
