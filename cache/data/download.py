"""`vl2v data download`: fetch a dataset's public archives, check them, unpack into DomainBed layout."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import requests

from ..errors import InvalidOption
from .datasets import Archive, DatasetError, get_spec, open_dataset

log = logging.getLogger("vl2v.data")

Progress = Callable[[str, int, int | None], None]  # (file name, bytes so far, total bytes or None)


@dataclass(frozen=True)
class Limits:
    """What one archive may hold: an archive beyond these is refused before anything is written (DomainNet, the
    largest benchmark, is about 600,000 files and 20 GB)."""

    max_bytes: int = 64 * 2**30  # downloaded, and unpacked
    max_files: int = 2_000_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_files < 1:
            raise InvalidOption("download limits must be >= 1")


@dataclass(frozen=True)
class Downloaded:
    """A dataset unpacked in place: where, the images found per domain, and where they differ from the paper's."""

    dataset: str
    folder: str
    images_by_domain: dict[str, int]
    warnings: list[str]


def download_dataset(
    name: str,
    data_dir: Path,
    *,
    mirror: str | None = None,
    on_progress: Progress = lambda name, done, total: None,
    timeout: float = 60.0,
    limits: Limits = Limits(),
) -> Downloaded:
    """Download, verify and unpack `name` into `data_dir/<Folder>`; returns the images found per domain.

    Args:
        mirror: a base URL serving the same file names (`<mirror>/<file>`) instead of the original hosts.
        limits: the most an archive may weigh and hold, downloaded and unpacked.

    Raises:
        DatasetError: no public archive, a checksum that does not match, an unsafe or unreadable archive, or an
            unpacked folder without the registered domains.
    """
    spec = get_spec(name)
    if spec is None or not spec.archives:
        raise DatasetError(f"{name} has no public archive to download. Source: {spec.source if spec else '-'}")
    data_dir = Path(data_dir).expanduser()
    staging = data_dir / ".vl2v-download"
    target = data_dir / spec.folder
    new_folders = [f for f in (data_dir, target) if not f.exists()]  # what a failed download takes away again
    staging.mkdir(parents=True, exist_ok=True)
    try:
        for archive in spec.archives:
            url = f"{mirror.rstrip('/')}/{archive.filename}" if mirror else archive.url
            try:
                path = _fetch(url, staging / archive.filename, archive, on_progress, timeout, limits)
            except DatasetError as e:
                raise DatasetError(
                    f"{e}. Fetch {archive.filename} on a machine online and serve it with --mirror URL, or unpack "
                    f"it into {target}/<domain>/<class>/ yourself"
                ) from None
            _unpack(path, staging / "unpacked", target, archive, spec.domains, limits)
            path.unlink()
    except BaseException:
        for folder in reversed(new_folders):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    dataset = open_dataset(name, data_dir)
    found = Counter(f.domain for f in dataset.files)
    warnings = [
        f"{d}: {found.get(d, 0)} images, the published count is {n}"
        for d, n in spec.counts.items()
        if found.get(d, 0) != n
    ]
    for warning in warnings:
        log.warning(warning)
    return Downloaded(name, str(target), dict(sorted(found.items())), warnings)


def https_first(url: str) -> list[str]:
    """The URLs to try for `url`, HTTPS first: a plain-HTTP source is used only if its HTTPS twin cannot be
    reached (the archives carry no published checksums, so transport security is what vouches for them)."""
    if url.startswith("http://"):
        return ["https://" + url[len("http://") :], url]
    return [url]


def why(error: requests.RequestException) -> str:
    """What went wrong with a request, in a few words rather than the HTTP library's chain of exceptions."""
    url = error.request.url if error.request is not None else None
    host: str | None = urlsplit(url).hostname if isinstance(url, str) else None
    chain = f"{error!r}"
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"the server answered HTTP {error.response.status_code} {error.response.reason or ''}".rstrip()
    if isinstance(error, requests.Timeout):
        return f"{host or 'the server'} did not answer in time"
    if isinstance(error, requests.exceptions.SSLError):
        return f"the TLS connection to {host or 'the server'} failed"
    if "NameResolution" in chain or "Name or service not known" in chain or "getaddrinfo" in chain:
        return f"cannot resolve {host or 'the host'} (is this machine offline?)"
    if "refused" in chain.lower():
        return f"{host or 'the server'} refused the connection"
    return f"cannot connect to {host or 'the server'} ({type(error).__name__})"


def _fetch(url: str, path: Path, archive: Archive, on_progress: Progress, timeout: float, limits: Limits) -> Path:
    candidates = https_first(url)
    for i, candidate in enumerate(candidates):
        try:
            return _fetch_one(candidate, path, archive, on_progress, timeout, limits)
        except (requests.exceptions.SSLError, requests.ConnectionError) as e:
            if i + 1 == len(candidates):
                raise DatasetError(f"could not download {archive.filename} from {candidate}: {why(e)}") from None
            log.warning("could not reach %s over HTTPS (%s); falling back to plain HTTP", candidate, type(e).__name__)
    raise AssertionError("unreachable")


def _fetch_one(url: str, path: Path, archive: Archive, on_progress: Progress, timeout: float, limits: Limits) -> Path:
    partial = path.with_suffix(path.suffix + ".part")
    digest = hashlib.sha256()
    if url.startswith("http://"):
        log.warning("downloading %s over plain HTTP: only the archive's CRCs and layout vouch for it", url)
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0)) or None
            if total is not None and total > limits.max_bytes:
                raise DatasetError(f"{archive.filename} is {total} bytes, over the limit of {limits.max_bytes}")
            done = 0
            with partial.open("wb") as out:
                for chunk in response.iter_content(1 << 20):
                    done += len(chunk)
                    if done > limits.max_bytes:
                        raise DatasetError(f"{archive.filename} is larger than the limit of {limits.max_bytes} bytes")
                    out.write(chunk)
                    digest.update(chunk)
                    on_progress(archive.filename, done, total)
    except requests.ConnectionError:  # TLS failures too: the caller may try the next URL
        partial.unlink(missing_ok=True)
        raise
    except requests.RequestException as e:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"could not download {archive.filename} from {url}: {why(e)}") from None
    except DatasetError:
        partial.unlink(missing_ok=True)
        raise
    if archive.sha256 and digest.hexdigest() != archive.sha256:
        partial.unlink()
        raise DatasetError(f"{archive.filename}: sha256 {digest.hexdigest()} does not match {archive.sha256}")
    partial.replace(path)
    return path


def _unpack(
    path: Path, scratch: Path, target: Path, archive: Archive, domains: tuple[str, ...], limits: Limits
) -> None:
    """Extract into `scratch`, refusing unsafe member names and archives over the limits before writing a file,
    then move the domain folders into `target`."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                _check_names(z.namelist(), path)
                infos = z.infolist()
                _check_size(path, len(infos), sum(i.file_size for i in infos), limits)
                bad = z.testzip()
                if bad is not None:
                    raise DatasetError(f"{path.name}: {bad} is corrupt (CRC mismatch)")
                z.extractall(scratch)  # extraction stops at each member's declared size
        elif tarfile.is_tarfile(path):
            with tarfile.open(path) as t:
                members = t.getmembers()
                _check_names([m.name for m in members], path)
                _check_size(path, len(members), sum(m.size for m in members if m.isfile()), limits)
                t.extractall(scratch, filter="data")
        else:
            raise DatasetError(f"{path.name} is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise DatasetError(f"{path.name} cannot be unpacked: {e}") from None
    source = _domain_parent(scratch, archive, domains)
    target.mkdir(parents=True, exist_ok=True)
    for child in source.iterdir():
        if child.is_dir():
            destination = target / child.name
            if destination.exists():
                shutil.copytree(child, destination, dirs_exist_ok=True)
            else:
                shutil.move(str(child), destination)
    shutil.rmtree(scratch, ignore_errors=True)


def _check_size(path: Path, files: int, size: int, limits: Limits) -> None:
    if files > limits.max_files:
        raise DatasetError(f"{path.name} holds {files} files, over the limit of {limits.max_files}; refusing to unpack")
    if size > limits.max_bytes:
        raise DatasetError(f"{path.name} unpacks to {size} bytes, over the limit of {limits.max_bytes}; refusing")


def _check_names(names: list[str], path: Path) -> None:
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith("/") or ".." in parts:
            raise DatasetError(f"{path.name}: refusing unsafe member name {name!r}")


def _domain_parent(scratch: Path, archive: Archive, domains: tuple[str, ...]) -> Path:
    """The unpacked folder whose children are domain folders (archives differ in how deep they put them)."""
    for folder in [scratch, *sorted(p for p in scratch.rglob("*") if p.is_dir())]:
        if any((folder / d).is_dir() for d in domains):
            return folder
    hint = f" (expected {archive.unpacks_to}/)" if archive.unpacks_to else ""
    raise DatasetError(f"{archive.filename} holds none of the domain folders {list(domains)}{hint}")
