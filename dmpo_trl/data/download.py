"""Fetch a dataset archive once, check its checksum, and unpack it into a cache directory.

Every failure is fast and explicit: the socket timeout bounds connecting and each read, and the host name is
resolved in a helper thread with the same timeout (plain `urlopen` has no timeout on DNS look-ups). An archive whose
members would land outside the folder it is unpacked into (absolute paths, `..`, symbolic links) is refused whole.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path


DEFAULT_TIMEOUT = 10.0


class DownloadError(RuntimeError):
    """The archive could not be fetched (offline, refused, timed out, HTTP error)."""


class ChecksumError(ValueError):
    """The fetched archive does not match its expected checksum."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the folder it is unpacked into."""


def file_checksum(path: str | Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: str | Path, checksum: str) -> None:
    """Raise `ChecksumError` unless `path` matches `checksum`, written `"<algorithm>:<hex>"` (e.g. `"md5:0e33..."`).

    A bare hex string is taken as md5 (32 digits) or sha256 (64 digits).
    """
    algorithm, _, expected = checksum.rpartition(":")
    algorithm = algorithm or {32: "md5", 64: "sha256"}.get(len(expected), "")
    if algorithm not in hashlib.algorithms_available:
        raise ValueError(f"Cannot tell the hash algorithm of checksum {checksum!r}; write it as 'md5:<hex>'.")
    actual = file_checksum(path, algorithm)
    if actual.lower() != expected.lower():
        raise ChecksumError(
            f"Checksum mismatch for {path}: expected {algorithm} {expected}, got {actual}. "
            "The download is corrupt or the archive changed upstream; it was not unpacked."
        )


def _resolve_host(url: str, timeout: float) -> None:
    """Resolve the URL's host in a daemon thread so that a dead resolver cannot hang the caller."""
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        return
    result: list[BaseException | None] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, None)
            result.append(None)
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        raise DownloadError(f"Could not resolve {host!r} within {timeout:g} s (no network?)")
    if result[0] is not None:
        raise DownloadError(f"Could not resolve {host!r}: {result[0]}")


def fetch(url: str, dest: str | Path, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Download `url` to `dest` atomically (written to a temporary file, then renamed). Supports `file://` URLs.

    Raises `DownloadError` on any network failure, within about `timeout` seconds when offline.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        if urllib.parse.urlsplit(url).scheme in ("http", "https"):
            _resolve_host(url, timeout)
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:  # noqa: S310
            shutil.copyfileobj(response, out, 1 << 20)
    except (DownloadError, urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(f"Could not download {url}: {exc}") from exc
    os.replace(part, dest)
    return dest


def unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member could be written outside the folder it is unpacked into, or None when it cannot.

    Example:
    ```python
    >>> unsafe_member(zipfile.ZipInfo("ml-100k/u.data")), unsafe_member(zipfile.ZipInfo("../u.data"))
    (None, "climbs out of the folder with '..'")
    ```
    """
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "climbs out of the folder with '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    return None


def safe_extract(archive: zipfile.ZipFile, directory: str | Path) -> None:
    """Unpack `archive` into `directory` once every member is checked: raises `UnsafeArchiveError` naming the first
    member that is an absolute path, climbs out with `..`, is a symbolic link, or otherwise resolves outside
    `directory`, before anything is written.

    Example:
    ```python
    >>> import io, tempfile
    >>> buffer = io.BytesIO()
    >>> with zipfile.ZipFile(buffer, "w") as zf:
    ...     zf.writestr("../evil.txt", "x")
    >>> try:
    ...     safe_extract(zipfile.ZipFile(buffer), tempfile.gettempdir())
    ... except UnsafeArchiveError as error:
    ...     print(error)
    Refusing to unpack None: member '../evil.txt' climbs out of the folder with '..'. Nothing was unpacked.
    ```
    """
    directory = Path(directory).resolve()
    for info in archive.infolist():
        reason = unsafe_member(info)
        if reason is None and not (directory / info.filename).resolve().is_relative_to(directory):
            reason = "resolves outside the folder"
        if reason is not None:
            raise UnsafeArchiveError(
                f"Refusing to unpack {archive.filename}: member {info.filename!r} {reason}. Nothing was unpacked."
            )
    archive.extractall(directory)


def fetch_and_extract(url: str, cache_dir: str | Path, checksum: str | None, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Fetch a zip archive into `cache_dir`, verify `checksum` (skipped when None), and unpack it there.

    Returns `cache_dir`. Unpacking goes through a temporary directory, so an interrupted run leaves no half-filled
    dataset behind; on a checksum mismatch, or a member that would land outside the cache (`UnsafeArchiveError`), the
    archive is deleted and nothing is unpacked.
    """
    cache_dir = Path(cache_dir)
    archive = cache_dir / Path(urllib.parse.urlsplit(url).path).name
    fetch(url, archive, timeout=timeout)
    try:
        if checksum is not None:
            verify_checksum(archive, checksum)
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp, zipfile.ZipFile(archive) as zf:
            safe_extract(zf, tmp)
            for entry in Path(tmp).iterdir():
                target = cache_dir / entry.name
                if target.exists():
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
                os.replace(entry, target)
    finally:
        archive.unlink(missing_ok=True)
    return cache_dir
