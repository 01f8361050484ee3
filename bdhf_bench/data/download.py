"""Fetching a missing file: download to a temporary name, verify its checksum, then rename.

A file appears under its final name only once it is complete and its MD5 matches the published
value (torchvision's), so an interrupted or corrupted download never looks like data. Any network
failure is reported as ``MissingDataError`` with one line naming the folder and the files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

TIMEOUT_S = 30.0
_CHUNK = 1 << 20


class MissingDataError(FileNotFoundError):
    """A data set's files are absent and could not be downloaded."""


class CorruptDataError(ValueError):
    """A data set's file is there but truncated or corrupt (one line naming it). Such a file is
    never downloaded over: the user deletes or replaces it."""


def _urlopen(url: str, timeout: float) -> IO[bytes]:
    """The one place that touches the network (tests replace it)."""
    return urllib.request.urlopen(url, timeout=timeout)


def md5_of(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(urls: Sequence[str], target: Path, md5: str) -> None:
    """Download the first of ``urls`` that answers with the expected MD5 to ``target``.

    Raises OSError (with the reasons, one line) when none does.
    """
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            digest = hashlib.md5()
            with os.fdopen(fd, "wb") as out, _urlopen(url, TIMEOUT_S) as response:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != md5:
                raise OSError(f"checksum mismatch (md5 {digest.hexdigest()}, expected {md5})")
            os.replace(tmp, target)
            return
        except (OSError, ValueError, http.client.HTTPException) as err:
            errors.append(f"{url}: {getattr(err, 'reason', err)}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    for folder in made:  # nothing came: leave no empty data folder behind
        with contextlib.suppress(OSError):
            folder.rmdir()
    raise OSError("; ".join(errors))


def gunzip(source: Path, target: Path) -> None:
    """Decompress ``source`` to ``target`` atomically (torchvision keeps both forms)."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(source, "rb") as f:
            shutil.copyfileobj(f, out, _CHUNK)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def extract_members(archive: Path, folder: Path, members: Sequence[str]) -> None:
    """Extract exactly ``folder.name/<member>`` for each member of a .tar.gz into ``folder``.

    Only the named regular files are read (no paths from the archive are trusted); they are
    written under temporary names and renamed once complete.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in members:
            info = tar.getmember(f"{folder.name}/{member}")
            if not info.isfile():
                raise OSError(f"{archive}: {info.name} is not a regular file")
            source = tar.extractfile(info)
            if source is None:
                raise OSError(f"{archive}: cannot read {info.name}")
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{member}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, source:
                    shutil.copyfileobj(source, out, _CHUNK)
                os.replace(tmp, folder / member)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)


def probe(url: str, timeout: float = 10.0) -> str | None:
    """None when ``url`` answers now, else why not (one line): the preflight's question
    "could the missing files be downloaded?", asked without downloading them."""
    try:
        with _urlopen(url, timeout):
            return None
    except (OSError, ValueError, http.client.HTTPException) as err:
        return " ".join(str(getattr(err, "reason", err)).split())
