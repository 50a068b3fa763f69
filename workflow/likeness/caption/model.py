"""Which WD14 tagger a run uses and its two files: ``model.onnx`` and ``selected_tags.csv``.

The files come from the offline stand-in (``caption.standin``), a local folder (``caption.model_dir``)
or the Hugging Face hub (``caption.model`` at ``caption.revision``, through likeness.hub and its cache).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from likeness import hub
from likeness.caption.wd14 import MODEL_FILE, TAGS_FILE
from likeness.config import Section
from likeness.errors import ConfigError, LikenessError
from likeness.hub import Log

STANDIN_DIR = "standin-model"  # in caption.cache_dir: the stand-in tagger, built on first use
OFFLINE_HINT = (
    "set config key 'caption.model_dir' to a folder with model.onnx and selected_tags.csv, or run once with network"
)


@dataclass(frozen=True)
class TagTable:
    """The rows of ``selected_tags.csv`` in model output order."""

    names: tuple[str, ...]
    categories: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.names)


def read_tag_table(path: str | os.PathLike[str]) -> TagTable:
    """Read a WD14 ``selected_tags.csv`` (columns tag_id,name,category,count)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise LikenessError(f"cannot read tag list {path}: {exc.strerror or exc}") from exc
    if not rows or [cell.strip() for cell in rows[0][:3]] != ["tag_id", "name", "category"]:
        raise LikenessError(f"{path} is not a WD14 selected_tags.csv (expected header tag_id,name,category,...)")
    names: list[str] = []
    categories: list[int] = []
    for line_number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            names.append(row[1])
            categories.append(int(row[2]))
        except (IndexError, ValueError):
            raise LikenessError(f"{path} line {line_number}: expected tag_id,name,category,count") from None
    return TagTable(tuple(names), tuple(categories))


@dataclass(frozen=True)
class ModelFiles:
    onnx_path: Path
    tags_path: Path
    label: str  # for logs: "repo@revision", "folder ...", "offline stand-in"


def local_model_files(folder: str | os.PathLike[str], key: str = "caption.model_dir") -> ModelFiles:
    root = Path(folder)
    missing = [name for name in (MODEL_FILE, TAGS_FILE) if not (root / name).is_file()]
    if missing:
        raise ConfigError(key, f"folder '{root}' lacks {' and '.join(missing)}")
    return ModelFiles(root / MODEL_FILE, root / TAGS_FILE, f"folder {root}")


def hub_model_files(repo_id: str, revision: str | None, hub_cache: str | None, log: Log) -> ModelFiles:
    """The model's two files from the Hugging Face cache, downloading them on first use."""
    paths = {name: _hub_file(repo_id, revision, name, hub_cache, log) for name in (MODEL_FILE, TAGS_FILE)}
    label = f"{repo_id}@{revision[:10]}" if revision else repo_id
    return ModelFiles(paths[MODEL_FILE], paths[TAGS_FILE], label)


def _hub_file(repo_id: str, revision: str | None, filename: str, hub_cache: str | None, log: Log) -> Path:
    file = hub.HubFile(
        repo=repo_id,
        filename=filename,
        revision=revision,
        cache_dir=hub_cache,
        repo_key="caption.model",
        revision_key="caption.revision",
        file_key="caption.model",
    )
    announce = f"caption: downloading {filename} of {repo_id} (first use) into the Hugging Face cache"
    try:
        return hub.fetch(file, announce, log)
    except hub.Unreachable as error:
        raise LikenessError(
            f"caption model '{repo_id}' is not cached and the hub cannot be reached ({error.reason}): {OFFLINE_HINT}"
        ) from None


def locate_model(settings: Section, cache_root: Path, log: Log) -> ModelFiles:
    """The tagger the ``caption`` settings choose: the stand-in, a local folder, or the hub's model."""
    if settings.standin:
        from likeness.caption import standin_tagger  # needs onnx, a dev package: only for the stand-in

        folder = standin_tagger.build(cache_root / STANDIN_DIR)
        files = local_model_files(folder, "caption.standin")
        return ModelFiles(files.onnx_path, files.tags_path, "offline stand-in (its tags mean nothing)")
    if settings.model_dir:
        return local_model_files(settings.model_dir)
    return hub_model_files(settings.model, settings.revision, settings.hub_cache, log)
