"""train.base_model: a local file, or a hub file found by huggingface_hub in a cache the test lays out.

hf_hub_download runs for real against a Hugging Face cache built here (blobs, snapshots/<revision>, refs);
the network is never reached (HF_HUB_OFFLINE is set for the not-cached case).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fixtures.training import FILENAME, REPO_ID, REVISION, make_hub_cache
from likeness import hub
from likeness.config import Section, validate_config
from likeness.errors import ConfigError
from likeness.train import base_model as bm

CONTENT = b"safetensors bytes standing in for SDXL: only their hash matters here" * 1000


def _train(**values) -> Section:
    """The train section as a job gets it: the schema's defaults filled in, frozen."""
    return validate_config({"person": "p", "source": {"url": "sqlite:///p.db"}, "train": values}).train


def _cfg(tmp_path: Path, **overrides) -> Section:
    values = {
        "base_model": REPO_ID,
        "base_model_sha256": hashlib.sha256(CONTENT).hexdigest(),
        "hub_cache": str(tmp_path / "hub"),
        "cache_dir": str(tmp_path / "cache" / "train"),
    }
    return _train(**{**values, **overrides})


def test_defaults_pin_sdxl_base_and_its_published_hash() -> None:
    settings = _train()
    assert settings.base_model == REPO_ID and settings.base_model_file == FILENAME
    assert settings.base_model_revision == REVISION
    assert settings.base_model_sha256 == "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b"
    assert bm.identity(settings) == f"{REPO_ID}@{REVISION}/{FILENAME}"


def test_repo_ids_and_paths_are_told_apart(tmp_path: Path) -> None:
    local = tmp_path / "model.safetensors"
    local.write_bytes(b"x")
    assert bm.is_repo_id(REPO_ID)
    for value in (str(local), "./a/b", "models/sdxl.safetensors", "~/sdxl.ckpt", ""):
        assert not bm.is_repo_id(value), value
    assert bm.identity(_train(base_model=str(local))) == str(local)


def test_a_local_file_is_used_as_it_is(tmp_path: Path) -> None:
    local = tmp_path / "model.safetensors"
    local.write_bytes(b"my own merge")
    assert bm.resolve(_cfg(tmp_path, base_model=str(local))) == local
    with pytest.raises(ConfigError, match=r"train\.base_model"):
        bm.resolve(_cfg(tmp_path, base_model=str(tmp_path / "missing.safetensors")))


def test_the_cached_hub_file_is_found_offline_and_checked_once(tmp_path: Path) -> None:
    snapshot = make_hub_cache(tmp_path / "hub", CONTENT)
    lines: list[str] = []
    path = bm.resolve(_cfg(tmp_path), log=lines.append)
    assert path == snapshot and path.read_bytes() == CONTENT
    assert sum("checking the sha256" in line for line in lines) == 1
    memo = json.loads((tmp_path / "cache" / "train" / bm.VERIFIED).read_text())
    assert [entry["sha256"] for entry in memo.values()] == [hashlib.sha256(CONTENT).hexdigest()]
    # the second time the remembered hash serves (same path, size, mtime)
    assert bm.resolve(_cfg(tmp_path), log=lines.append) == snapshot
    assert sum("checking the sha256" in line for line in lines) == 1


def test_a_file_with_the_wrong_hash_is_refused_naming_the_key(tmp_path: Path) -> None:
    make_hub_cache(tmp_path / "hub", CONTENT)
    with pytest.raises(ConfigError) as error:
        bm.resolve(_cfg(tmp_path, base_model_sha256="0" * 64), log=lambda _line: None)
    message = str(error.value)
    assert "train.base_model_sha256" in message and "\n" not in message
    assert hashlib.sha256(CONTENT).hexdigest() in message


def test_a_changed_file_is_hashed_again(tmp_path: Path) -> None:
    snapshot = make_hub_cache(tmp_path / "hub", CONTENT)
    bm.resolve(_cfg(tmp_path), log=lambda _line: None)
    snapshot.resolve().write_bytes(CONTENT + b"!")  # damaged in place after it was checked
    with pytest.raises(ConfigError, match="is damaged"):
        bm.resolve(_cfg(tmp_path), log=lambda _line: None)


def test_offline_and_not_cached_is_one_line_naming_train_base_model(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    (tmp_path / "hub").mkdir()
    with pytest.raises(ConfigError) as error:
        bm.resolve(_cfg(tmp_path), log=lambda _line: None)
    message = str(error.value)
    assert message.startswith("config key 'train.base_model':") and "\n" not in message
    assert FILENAME in message and "offline" in message


def test_another_revision_is_not_taken_for_the_pinned_one(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    make_hub_cache(tmp_path / "hub", CONTENT, revision="f" * 40)  # cached, but at another commit
    with pytest.raises(ConfigError, match=r"train\.base_model'"):
        bm.resolve(_cfg(tmp_path), log=lambda _line: None)


def _no_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The record is a look-up: reading a multi-GB file to hash it again fails the test."""

    def refuse(path: Path) -> str:
        raise AssertionError(f"hashed {path}")

    monkeypatch.setattr(hub, "file_sha256", refuse)


def test_the_record_names_the_repo_revision_and_the_pinned_hash(tmp_path: Path, monkeypatch) -> None:
    _no_hashing(monkeypatch)
    record = bm.record(_cfg(tmp_path))
    assert record == {
        "name": REPO_ID,
        "file": FILENAME,
        "revision": REVISION,
        "sha256": hashlib.sha256(CONTENT).hexdigest(),
        "sha256_from": "train.base_model_sha256 (the download is checked against it before training)",
    }


def test_without_a_pinned_hash_the_record_takes_the_remembered_one_or_says_null(tmp_path: Path, monkeypatch) -> None:
    snapshot = make_hub_cache(tmp_path / "hub", CONTENT)
    cfg = _cfg(tmp_path, base_model_sha256="")
    before = bm.record(cfg)
    assert before["sha256"] is None and before["sha256_from"].startswith("not known:")
    assert before["revision"] == REVISION
    # once a check hashed the cached file (verified.json), the record reads that hash and hashes nothing
    hub.remembered_sha256(snapshot, tmp_path / "cache" / "train" / bm.VERIFIED)
    _no_hashing(monkeypatch)
    after = bm.record(cfg)
    assert after["sha256"] == hashlib.sha256(CONTENT).hexdigest()
    assert bm.VERIFIED in after["sha256_from"]


def test_a_local_model_is_recorded_by_path_and_a_remembered_hash_only(tmp_path: Path, monkeypatch) -> None:
    local = tmp_path / "merge.safetensors"
    local.write_bytes(b"my own merge")
    cfg = _cfg(tmp_path, base_model=str(local))
    _no_hashing(monkeypatch)
    record = bm.record(cfg)
    assert record["name"] == str(local) and record["file"] == "merge.safetensors" and record["revision"] is None
    assert record["sha256"] is None and "never hashed" in record["sha256_from"]
    memo = tmp_path / "cache" / "train" / bm.VERIFIED
    memo.parent.mkdir(parents=True)
    stat = local.stat()
    memo.write_text(
        json.dumps({str(local.resolve()): {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": "ab" * 32}})
    )
    assert bm.record(cfg)["sha256"] == "ab" * 32
    local.write_bytes(b"changed since")  # another size: the remembered hash is not this file's
    assert bm.record(cfg)["sha256"] is None
