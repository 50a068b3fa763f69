"""The one way files come from the Hugging Face hub: the cache first, a download only when reachable.

Used by the caption stage (the WD14 tagger's two files) and the training (the SDXL base model). A file is
one path of a repo at a revision, looked up in huggingface_hub's cache without the network first; a
download starts only when the hub can be reached, so that a machine without network fails at once
instead of after huggingface_hub's retries (about 25 s). Each error is one line naming the config key
that chose the repo, the revision or the file (ConfigError), or says that the hub cannot be reached
(:class:`Unreachable`, which each caller words with its own advice). Model files are large: their
SHA-256 is computed once and remembered by path, size and modification time (:func:`remembered_sha256`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from likeness.atomic import atomic_write_json
from likeness.errors import ConfigError, LikenessError, one_line

Log = Callable[[str], None]
OFFLINE = "offline: HF_HUB_OFFLINE is set or the hub's name does not resolve"


@dataclass(frozen=True)
class HubFile:
    """One file of a hub repo at a revision, and the config keys that chose each part (errors name them)."""

    repo: str
    filename: str
    revision: str | None
    cache_dir: str | None  # None: huggingface_hub's default cache (HF_HUB_CACHE, HF_HOME)
    repo_key: str
    revision_key: str
    file_key: str


class Unreachable(LikenessError):
    """The file is not cached and the hub cannot be reached; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def resolvable() -> bool:
    """False when the hub's host name does not resolve and no proxy is set."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy")):
        return True  # offline mode fails fast by itself; a proxy resolves names for us
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def offline() -> bool:
    """Whether no download can even start: offline mode, or the hub's name does not resolve."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or not resolvable()


def default_cache() -> str:
    """huggingface_hub's cache folder when no cache_dir is given."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached(file: HubFile) -> Path | None:
    """The file from the cache, or None when it is not there; never touches the network."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = hf_hub_download(
            file.repo, file.filename, revision=file.revision, cache_dir=file.cache_dir, local_files_only=True
        )
    except LocalEntryNotFoundError:
        return None  # not cached yet
    except Exception as exc:  # a malformed repo id or revision, a broken cache
        raise ConfigError(file.repo_key, f"cannot use '{file.repo}': {one_line(exc)}") from None
    return Path(path)


def download(file: HubFile) -> Path:
    """Download the file into the cache (resumable; a finished file is never fetched again)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return Path(hf_hub_download(file.repo, file.filename, revision=file.revision, cache_dir=file.cache_dir))
    except RepositoryNotFoundError:
        raise ConfigError(
            file.repo_key, f"'{file.repo}' is not a model repository on the hub (or it needs a login)"
        ) from None
    except RevisionNotFoundError:
        raise ConfigError(file.revision_key, f"'{file.revision}' is not a revision of '{file.repo}'") from None
    except RemoteEntryNotFoundError:
        raise ConfigError(file.file_key, f"'{file.repo}' has no file {file.filename}") from None
    except Exception as exc:  # offline, DNS, proxy, timeouts, hub errors: one line, not a traceback
        raise Unreachable(f"{type(exc).__name__}: {one_line(exc, 160)}") from None


def fetch(file: HubFile, announce: str, log: Log) -> Path:
    """The file from the cache, else downloaded after logging ``announce``; Unreachable when neither works."""
    path = cached(file)
    if path is not None:
        return path
    if offline():
        raise Unreachable(OFFLINE)
    log(announce)
    return download(file)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_memo(memo_path: Path) -> dict[str, Any]:
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def known_sha256(path: Path, memo_path: Path) -> str | None:
    """The file's SHA-256 as ``memo_path`` remembers it for its path, size and mtime; None when it is not
    remembered (or the file changed since). Never reads the file itself: a 6.9 GB hash is not a look-up."""
    try:
        real = path.resolve()
        stat = real.stat()
    except OSError:
        return None
    entry = _read_memo(memo_path).get(str(real))
    if (
        isinstance(entry, dict)
        and entry.get("size") == stat.st_size
        and entry.get("mtime_ns") == stat.st_mtime_ns
        and isinstance(entry.get("sha256"), str)
    ):
        return entry["sha256"]
    return None


def remembered_sha256(path: Path, memo_path: Path, before_hashing: Callable[[int], None] | None = None) -> str:
    """The file's SHA-256, computed once per (path, size, mtime) and remembered in the JSON ``memo_path``;
    ``before_hashing(size)`` is called when it has to be computed (a 6.9 GB file takes half a minute)."""
    real = path.resolve()
    stat = real.stat()
    known = known_sha256(real, memo_path)
    if known is not None:
        return known
    memo = _read_memo(memo_path)
    if before_hashing is not None:
        before_hashing(stat.st_size)
    sha = file_sha256(real)
    memo[str(real)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(memo_path, memo)
    return sha
