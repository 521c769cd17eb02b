"""The suite's own set-up: where the test images come from, and what happens when a server it needs is missing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO, images_folder, need_server
from .postgres import INSTALL


def pacs_mini_at(folder):
    (folder / "pacs-mini" / "photo").mkdir(parents=True)
    return folder / "pacs-mini"


def test_vl2v_test_data_takes_the_pacs_mini_folder_itself_or_the_folder_holding_it(tmp_path):
    pacs = pacs_mini_at(tmp_path / "data")
    assert images_folder(str(pacs), tmp_path) == pacs  # as the README puts it: VL2V_TEST_DATA=FOLDER
    assert images_folder(str(tmp_path / "data"), tmp_path) == pacs
    assert images_folder("generated", tmp_path) is None
    assert images_folder(None, tmp_path / "elsewhere") is None  # a bare clone: the drawn images
    assert images_folder(None, tmp_path / "beside") is None
    with pytest.raises(pytest.UsageError, match="VL2V_TEST_DATA=.*neither it nor .*pacs-mini holds PACS"):
        images_folder(str(tmp_path / "typo"), tmp_path)


def test_a_missing_server_skips_with_the_install_command_except_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL is not installed: install PostgreSQL"):
        need_server("PostgreSQL", False, INSTALL)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"nginx is not installed: .*apt-get install -y nginx.*CI=true"):
        need_server("nginx", False, "Debian: apt-get install -y nginx")
    need_server("nginx", True, "")  # installed: nothing happens


@pytest.mark.parametrize("ci", ["", "true"])
def test_the_postgresql_tests_skip_without_postgresql_and_fail_in_ci(ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"VL2V_PG_BIN": "/nonexistent"}
    env |= {"CI": ci} if ci else {}
    module = "tests/teacher_service/test_idempotency_and_ledger.py"
    test = f"{module}::test_an_expired_claim_is_never_taken_over_by_another_body"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsE", "-p", "no:cacheprovider", f"{test}[postgresql]"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ci:
        assert done.returncode != 0 and "PostgreSQL is not installed" in done.stdout, done.stdout
    else:
        assert done.returncode == 0 and "1 skipped" in done.stdout, done.stdout
        assert "PostgreSQL is not installed: install PostgreSQL (Debian: apt-get update" in done.stdout
