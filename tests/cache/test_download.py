"""`vl2v data download` against a loopback HTTP server serving small archives of the real layout."""

from __future__ import annotations

import functools
import io
import json
import socket
import tarfile
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from cache.data.datasets import DatasetError
from cache.data.download import Limits, download_dataset, https_first
from cli.app import app


@pytest.fixture
def mirror(tmp_path):
    """A folder served over HTTP on loopback; tests drop archives into it."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    handler = functools.partial(_Quiet, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def pacs_zip(pacs_mini, top: str = "kfold", per_class: int = 3) -> bytes:
    """PACS as its official archive lays it out (`kfold/<domain>/<class>/...`), a few images per class."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for domain in ("art_painting", "cartoon", "photo", "sketch"):
            for class_dir in sorted((pacs_mini / domain).iterdir()):
                for image in sorted(class_dir.iterdir())[:per_class]:
                    z.write(image, f"{top}/{domain}/{class_dir.name}/{image.name}")
    return buffer.getvalue()


def test_download_unpacks_into_the_domainbed_layout_and_checks_counts(mirror, pacs_mini, tmp_path):
    folder, url = mirror
    (folder / "PACS.zip").write_bytes(pacs_zip(pacs_mini))
    seen = []
    result = download_dataset("pacs", tmp_path / "data", mirror=url, on_progress=lambda *a: seen.append(a))
    assert result.folder == str(tmp_path / "data" / "PACS")
    assert result.images_by_domain == {"art_painting": 21, "cartoon": 21, "photo": 21, "sketch": 21}
    assert (tmp_path / "data" / "PACS" / "sketch" / "dog").is_dir()
    assert any("published count is 2048" in w for w in result.warnings)  # a mirror with fewer images
    assert seen[-1][0] == "PACS.zip" and seen[-1][1] == seen[-1][2] > 0  # progress reached the total
    assert not (tmp_path / "data" / ".vl2v-download").exists()


def test_the_cli_downloads_with_json_output(mirror, pacs_mini, tmp_path):
    folder, url = mirror
    (folder / "PACS.zip").write_bytes(pacs_zip(pacs_mini, per_class=1))
    result = CliRunner().invoke(
        app, ["data", "download", "pacs", "--data-dir", str(tmp_path), "--mirror", url, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert sum(json.loads(result.stdout)["images_by_domain"].values()) == 28


def test_a_tar_archive_with_domains_at_the_top_works_too(mirror, pacs_mini, tmp_path):
    folder, url = mirror
    with tarfile.open(folder / "VLCS.tar.gz", "w:gz") as tar:
        for domain in ("Caltech101", "LabelMe", "SUN09", "VOC2007"):
            tar.add(next((pacs_mini / "photo" / "dog").iterdir()), f"VLCS/{domain}/dog/a.jpg")
    result = download_dataset("vlcs", tmp_path, mirror=url)
    assert result.images_by_domain == {"Caltech101": 1, "LabelMe": 1, "SUN09": 1, "VOC2007": 1}


def test_unsafe_member_names_are_refused(mirror, tmp_path):
    folder, url = mirror
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("../../escape.txt", "gotcha")
    (folder / "PACS.zip").write_bytes(buffer.getvalue())
    with pytest.raises(DatasetError, match="unsafe member name"):
        download_dataset("pacs", tmp_path / "data", mirror=url)
    assert not (tmp_path / "escape.txt").exists()


def test_a_missing_archive_or_a_dataset_without_one_is_a_clear_error(mirror, tmp_path):
    _, url = mirror
    with pytest.raises(DatasetError, match="could not download .*404"):
        download_dataset("pacs", tmp_path, mirror=url)
    with pytest.raises(DatasetError, match="no public archive.*Caltech Camera Traps"):
        download_dataset("terra_incognita", tmp_path)


def test_archives_over_the_file_or_size_limit_are_refused_before_anything_is_written(mirror, pacs_mini, tmp_path):
    folder, url = mirror
    (folder / "PACS.zip").write_bytes(pacs_zip(pacs_mini))  # 84 files
    with pytest.raises(DatasetError, match="holds 84 files, over the limit of 50"):
        download_dataset("pacs", tmp_path / "a", mirror=url, limits=Limits(max_files=50))
    assert not (tmp_path / "a" / "PACS").exists()

    bomb = io.BytesIO()  # 200 MB of zeros in about 200 kB
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("kfold/photo/dog/bomb.jpg", b"\0" * 200_000_000)
    (folder / "PACS.zip").write_bytes(bomb.getvalue())
    with pytest.raises(DatasetError, match="unpacks to 200000000 bytes, over the limit"):
        download_dataset("pacs", tmp_path / "b", mirror=url, limits=Limits(max_bytes=50_000_000))
    assert not (tmp_path / "b" / "PACS").exists()
    with pytest.raises(DatasetError, match="PACS.zip is [0-9]+ bytes, over the limit of 1000"):
        download_dataset("pacs", tmp_path / "c", mirror=url, limits=Limits(max_bytes=1000))


def test_https_is_tried_first_and_plain_http_only_as_a_fallback_with_a_warning(mirror, pacs_mini, tmp_path, caplog):
    assert https_first("http://host/a.zip") == ["https://host/a.zip", "http://host/a.zip"]
    assert https_first("https://host/a.zip") == ["https://host/a.zip"]
    folder, url = mirror  # a plain-HTTP loopback server: its HTTPS twin fails the TLS handshake
    (folder / "PACS.zip").write_bytes(pacs_zip(pacs_mini, per_class=1))
    download_dataset("pacs", tmp_path, mirror=url)
    assert f"could not reach https://{url[len('http://') :]}/PACS.zip over HTTPS" in caplog.text
    assert "over plain HTTP" in caplog.text


@pytest.mark.parametrize(
    ("mirror_url", "reason"),
    [
        ("http://vl2v-offline.invalid", "cannot resolve vl2v-offline.invalid (is this machine offline?)"),
        ("CLOSED", "127.0.0.1 refused the connection"),
    ],
)
def test_offline_a_download_is_one_line_saying_why_and_what_to_do_and_leaves_no_folder(tmp_path, mirror_url, reason):
    if mirror_url == "CLOSED":
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            mirror_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    data = tmp_path / "data"
    result = CliRunner().invoke(
        app, ["data", "download", "officehome", "--data-dir", str(data), "--mirror", mirror_url]
    )
    assert result.exit_code != 0
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: could not download office_home.zip from ") and reason in line, line
    assert "--mirror URL" in line and "Pool(" not in line and "Traceback" not in line
    assert not data.exists(), "nothing left behind: the next try starts clean"
