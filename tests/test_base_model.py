"""train.base_model: a local file, or a hub file found by huggingface_hub in a cache the test lays out.

hf_hub_download runs for real against a Hugging Face cache built here (blobs, snapshots/<revision>, refs);
the network is never reached (HF_HUB_OFFLINE is set for the not-cached case).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from install_helpers import FILENAME, REPO_ID, REVISION, make_hub_cache
from likeness.config import validate_section
from likeness.errors import ConfigError
from likeness.train import base_model as bm

CONTENT = b"safetensors bytes standing in for SDXL: only their hash matters here" * 1000


def _cfg(tmp_path: Path, **overrides) -> dict:
    cfg = validate_section(
        "train",
        {
            "base_model": REPO_ID,
            "base_model_sha256": hashlib.sha256(CONTENT).hexdigest(),
            "hub_cache": str(tmp_path / "hub"),
            "cache_dir": str(tmp_path / "cache" / "train"),
        },
    ).as_dict()
    cfg.update(overrides)
    return cfg


def test_defaults_pin_sdxl_base_and_its_published_hash() -> None:
    cfg = validate_section("train", {}).as_dict()
    assert cfg["base_model"] == REPO_ID and cfg["base_model_file"] == FILENAME
    assert cfg["base_model_revision"] == REVISION
    assert cfg["base_model_sha256"] == "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b"
    assert bm.identity(cfg) == f"{REPO_ID}@{REVISION}/{FILENAME}"


def test_repo_ids_and_paths_are_told_apart(tmp_path: Path) -> None:
    local = tmp_path / "model.safetensors"
    local.write_bytes(b"x")
    assert bm.is_repo_id(REPO_ID)
    for value in (str(local), "./a/b", "models/sdxl.safetensors", "~/sdxl.ckpt", ""):
        assert not bm.is_repo_id(value), value
    assert bm.identity({"base_model": str(local)}) == str(local)


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
