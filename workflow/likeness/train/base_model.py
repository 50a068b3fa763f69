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

import re
from pathlib import Path
from typing import Any

from likeness import hub
from likeness.config import Section
from likeness.errors import ConfigError, LikenessError

VERIFIED = "verified.json"  # in train.cache_dir: the sha256 of each checked file (hub.remembered_sha256)
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def looks_like_path(value: str) -> bool:
    path = Path(value).expanduser()
    return value.startswith((".", "/", "~")) or path.suffix in (".safetensors", ".ckpt") or path.exists()


def is_repo_id(value: str) -> bool:
    """A Hugging Face repo id (owner/name) rather than a local file."""
    return bool(value) and not looks_like_path(value) and bool(REPO_ID.fullmatch(value))


def identity(settings: Section) -> str:
    """What the run id records for the base model: the path of a local file, or repo@revision/file."""
    if is_repo_id(settings.base_model):
        return f"{settings.base_model}@{settings.base_model_revision}/{settings.base_model_file}"
    return settings.base_model


def _not_available(settings: Section, why: str) -> ConfigError:
    where = settings.hub_cache or f"the Hugging Face cache {hub.default_cache()}"
    return ConfigError(
        "train.base_model",
        f"{settings.base_model_file} of {settings.base_model} at {settings.base_model_revision[:12]} is not in "
        f"{where} and cannot be downloaded ({why}): run the same command where the hub can be reached, or set "
        "train.base_model to a local .safetensors file",
    )


def hub_spec(settings: Section) -> hub.HubFile:
    """The repo file ``train.base_model`` names, with the keys that chose each part."""
    return hub.HubFile(
        repo=settings.base_model,
        filename=settings.base_model_file,
        revision=settings.base_model_revision,
        cache_dir=settings.hub_cache,
        repo_key="train.base_model",
        revision_key="train.base_model_revision",
        file_key="train.base_model_file",
    )


def hub_file(settings: Section, log: hub.Log) -> Path:
    """The repo file from the hub cache, downloaded (resumably, into the cache) when it is not there yet."""
    file = hub_spec(settings)
    announce = (
        f"base model: downloading {file.filename} of {file.repo} at {settings.base_model_revision[:12]} "
        "into the Hugging Face cache"
    )
    try:
        return hub.fetch(file, announce, log)
    except hub.Unreachable as error:
        raise _not_available(settings, error.reason) from None


def resolve(settings: Section, log: hub.Log = print) -> Path:
    """The base model file to train on (downloading and checking a hub file first).

    ``settings`` is the ``train`` section. A local file is used as it is; a repo id is fetched and its
    sha256 compared with ``train.base_model_sha256`` (when set).
    """
    value = settings.base_model
    if not value:
        raise ConfigError("train.base_model", "is not set")
    if not is_repo_id(value):
        path = Path(value).expanduser()
        if not path.exists():
            raise ConfigError("train.base_model", f"{value!r} does not exist")
        return path
    path = hub_file(settings, log)
    expected = settings.base_model_sha256
    if expected:
        memo = Path(settings.cache_dir).expanduser() / VERIFIED

        def announce(size: int) -> None:
            log(f"base model: checking the sha256 of {path.name} ({size / 1e9:.1f} GB, once)")

        actual = hub.remembered_sha256(path, memo, announce)
        if actual != expected:
            raise ConfigError(
                "train.base_model_sha256",
                f"{settings.base_model_file} of {value} has sha256 {actual}, not {expected}: the cached file "
                f"{path} is damaged or the hash belongs to another file; delete it to download it again",
            )
    if not path.is_file():
        raise LikenessError(f"base model {path} is not a file")
    return path


def record(settings: Section) -> dict[str, Any]:
    """The base model a LoRA was trained on, for results/lora/<trigger>.json: ``name`` (the repo id or the
    local file), ``file`` and ``revision`` (a repo's; None for a local file) and ``sha256`` with
    ``sha256_from``, which says where the hash comes from, or why it is null.

    Never hashes the multi-GB file: the hash is ``train.base_model_sha256`` (resolve() checked the download
    against it before the training could launch) or the one ``verified.json`` remembers for this file's
    path, size and mtime (hub.known_sha256); otherwise null, and ``sha256_from`` says so."""
    name = settings.base_model
    memo = Path(settings.cache_dir).expanduser() / VERIFIED
    if not name:
        return {
            "name": None,
            "file": None,
            "revision": None,
            "sha256": None,
            "sha256_from": "train.base_model is not set",
        }
    if is_repo_id(name):
        entry: dict[str, Any] = {
            "name": name,
            "file": settings.base_model_file,
            "revision": settings.base_model_revision,
        }
        if settings.base_model_sha256:
            return entry | {
                "sha256": settings.base_model_sha256,
                "sha256_from": "train.base_model_sha256 (the download is checked against it before training)",
            }
        path = _cached_hub_file(settings)
        known = hub.known_sha256(path, memo) if path is not None else None
        if known:
            return entry | {"sha256": known, "sha256_from": f"{memo} (computed when the file was checked)"}
        return entry | {
            "sha256": None,
            "sha256_from": "not known: train.base_model_sha256 is empty and no hash of the file is remembered here",
        }
    path = Path(name).expanduser()
    entry = {"name": name, "file": path.name, "revision": None}
    known = hub.known_sha256(path, memo)
    if known:
        return entry | {"sha256": known, "sha256_from": f"{memo} (computed when the file was checked)"}
    return entry | {
        "sha256": None,
        "sha256_from": "not known: a local train.base_model is used as it is, never hashed (a multi-GB read)",
    }


def _cached_hub_file(settings: Section) -> Path | None:
    """The repo file in the hub cache, or None (not downloaded here, or the hub library cannot say)."""
    try:
        return hub.cached(hub_spec(settings))
    except (LikenessError, ImportError):
        return None
