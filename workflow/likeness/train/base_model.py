"""The SDXL base model: a local file, or one file of a Hugging Face repo at a pinned revision, checked by sha256.

``train.base_model`` defaults to ``stabilityai/stable-diffusion-xl-base-1.0``; its single-file checkpoint
``train.base_model_file`` at ``train.base_model_revision`` is fetched with ``huggingface_hub.hf_hub_download``
into the hub's cache (``train.hub_cache``, else ``HF_HUB_CACHE``/``HF_HOME``, shared with every other tool
that uses it) only when a training is about to launch. The hub's downloader writes to a temporary file
that is renamed into ``blobs/`` when complete, retries a dropped connection from where it stopped (an HTTP
range request), and with ``hf_xet`` keeps the chunks it already has across interrupted runs; a finished
file is never downloaded again, and ``HF_HUB_OFFLINE=1`` or no network uses the cache only.

The file is checked against ``train.base_model_sha256`` once (about half a minute for 6.9 GB); the result is
remembered in ``<train.cache_dir>/verified.json`` by path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from likeness.atomic import atomic_write_json
from likeness.errors import ConfigError, LikenessError

VERIFIED = "verified.json"
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
Log = Callable[[str], None]


def looks_like_path(value: str) -> bool:
    path = Path(value).expanduser()
    return value.startswith((".", "/", "~")) or path.suffix in (".safetensors", ".ckpt") or path.exists()


def is_repo_id(value: str) -> bool:
    """A Hugging Face repo id (owner/name) rather than a local file."""
    return bool(value) and not looks_like_path(value) and bool(REPO_ID.fullmatch(value))


def identity(cfg: Mapping[str, Any]) -> str:
    """What the run id records for the base model: the path of a local file, or repo@revision/file."""
    value = str(cfg.get("base_model") or "")
    if is_repo_id(value):
        return f"{value}@{cfg.get('base_model_revision')}/{cfg.get('base_model_file')}"
    return value


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified_sha256(path: Path, cache_dir: Path, log: Log) -> str:
    """The file's sha256, computed once per (path, size, mtime) and remembered in <cache_dir>/verified.json."""
    real = path.resolve()
    stat = real.stat()
    memo_path = cache_dir / VERIFIED
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(str(real))
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry.get("sha256"))
    log(f"base model: checking the sha256 of {path.name} ({stat.st_size / 1e9:.1f} GB, once)")
    sha = file_sha256(real)
    memo[str(real)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(memo_path, memo)
    return sha


def _offline() -> bool:
    from huggingface_hub import constants

    from likeness.caption.tagger import _hub_resolvable  # the caption stage's quick DNS check, shared

    return bool(constants.HF_HUB_OFFLINE) or not _hub_resolvable()


def _not_available(repo: str, cfg: Mapping[str, Any], why: str) -> ConfigError:
    from huggingface_hub import constants

    where = cfg.get("hub_cache") or f"the Hugging Face cache {constants.HF_HUB_CACHE}"
    return ConfigError(
        "train.base_model",
        f"{cfg.get('base_model_file')} of {repo} at {str(cfg.get('base_model_revision'))[:12]} is not in {where} "
        f"and cannot be downloaded ({why}): run the same command where the hub can be reached, or set "
        "train.base_model to a local .safetensors file",
    )


def hub_file(cfg: Mapping[str, Any], log: Log) -> Path:
    """The repo file from the hub cache, downloaded (resumably, into the cache) when it is not there yet."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo = str(cfg["base_model"])
    filename = str(cfg["base_model_file"])
    revision = str(cfg["base_model_revision"])
    hub_cache = cfg.get("hub_cache") or None
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=hub_cache, local_files_only=True))
    except LocalEntryNotFoundError:
        pass  # not cached yet
    if _offline():
        raise _not_available(repo, cfg, "offline: HF_HUB_OFFLINE is set or the hub's name does not resolve")
    log(f"base model: downloading {filename} of {repo} at {revision[:12]} into the Hugging Face cache")
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=hub_cache))
    except RepositoryNotFoundError:
        raise ConfigError(
            "train.base_model", f"'{repo}' is not a model repository on the hub (or needs a login)"
        ) from None
    except RevisionNotFoundError:
        raise ConfigError("train.base_model_revision", f"'{revision}' is not a revision of '{repo}'") from None
    except RemoteEntryNotFoundError:
        raise ConfigError("train.base_model_file", f"'{repo}' has no file {filename}") from None
    except Exception as exc:  # offline, DNS, proxy, timeouts, hub errors: one line, not a traceback
        raise _not_available(repo, cfg, f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}") from None


def resolve(cfg: Mapping[str, Any], log: Log = print) -> Path:
    """The base model file to train on (downloading and checking a hub file first).

    ``cfg`` is the validated ``train`` section. A local file is used as it is; a repo id is fetched and its
    sha256 compared with ``train.base_model_sha256`` (when set).
    """
    value = str(cfg.get("base_model") or "")
    if not value:
        raise ConfigError("train.base_model", "is not set")
    if not is_repo_id(value):
        path = Path(value).expanduser()
        if not path.exists():
            raise ConfigError("train.base_model", f"{value!r} does not exist")
        return path
    path = hub_file(cfg, log)
    expected = str(cfg.get("base_model_sha256") or "")
    if expected:
        actual = _verified_sha256(path, Path(str(cfg["cache_dir"])).expanduser(), log)
        if actual != expected:
            raise ConfigError(
                "train.base_model_sha256",
                f"{cfg['base_model_file']} of {value} has sha256 {actual}, not {expected}: the cached file "
                f"{path} is damaged or the hash belongs to another file; delete it to download it again",
            )
    if not path.is_file():
        raise LikenessError(f"base model {path} is not a file")
    return path
