"""The caption job: one caption file per selected face, ``<text_dir>/<stem>.txt``, and the captions table.

Each selected face's dataset image is tagged by the WD14 tagger (likeness.caption.tagger) unless its
probabilities are stored (likeness.caption.probcache): adding k faces runs the model on k images, and
changing a threshold or a tag list only rewrites text (likeness.caption.rules). A caption file whose
bytes are unchanged keeps its mtime, and so does the captions table, so that the training does not
start again for nothing.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from likeness import tables
from likeness.atomic import atomic_write_json, write_if_changed
from likeness.caption import model, tagger
from likeness.caption.preprocess import decode_image, preprocess
from likeness.caption.probcache import HASH_MEMO, ProbabilityCache, model_key
from likeness.caption.rules import CaptionRules, caption_line, caption_tags
from likeness.config import Section
from likeness.errors import LikenessError
from likeness.names import file_stem
from likeness.sdscripts.images import has_alpha_mask

if TYPE_CHECKING:
    from likeness.hub import Log


@dataclass
class Face:
    uid: str
    stem: str  # the face's file names (likeness.names.file_stem)
    image_path: Path
    data: bytes
    sha256: str


@dataclass
class Skipped:
    uid: str
    reason: str


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The selection manifest's rows (the columns captions need are checked)."""
    return tables.read_table(path, ("marker_uid", "image"))


def _face_image(stem: str, row: Mapping[str, str], images_dir: Path) -> Path | None:
    """The dataset image the trainer will read; the crop named in the manifest when it is missing."""
    for suffix in tables.IMAGE_SUFFIXES:
        candidate = images_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    crop = (row.get("image") or "").strip()
    return Path(crop) if crop and Path(crop).is_file() else None


def collect_faces(rows: Sequence[Mapping[str, str]], images_dir: Path) -> tuple[list[Face], list[Skipped]]:
    """The manifest's faces with their image bytes; the rows that cannot be captioned, with a reason."""
    faces: list[Face] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for row in rows:
        uid = row.get("marker_uid") or ""
        if not uid:
            skipped.append(Skipped(uid, "marker_uid is empty"))
            continue
        if uid in seen:
            skipped.append(Skipped(uid, "listed twice in the manifest"))
            continue
        seen.add(uid)
        stem = file_stem(uid)
        path = _face_image(stem, row, images_dir)
        if path is None:
            skipped.append(Skipped(uid, f"no image {images_dir / (stem + '.jpg')} nor crop {row.get('image')!r}"))
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            skipped.append(Skipped(uid, f"cannot read {path}: {exc.strerror or exc}"))
            continue
        faces.append(Face(uid, stem, path, data, hashlib.sha256(data).hexdigest()))
    return faces, skipped


@dataclass
class Tagging:
    """What running the model over the faces without stored probabilities gave."""

    vectors: dict[str, np.ndarray]  # image sha256 -> probabilities
    skipped: list[Skipped]
    provider: str
    load_seconds: float
    inference_seconds: float


def _tag_missing(
    pending: list[Face], files: model.ModelFiles, cache: ProbabilityCache, settings: Section, log: Log
) -> Tagging:
    """Run the model once over the faces without stored probabilities, batched."""
    loaded = tagger.load_tagger(files.onnx_path, settings.provider, log)
    if loaded.n_outputs is not None and loaded.n_outputs != cache.n_tags:
        raise LikenessError(
            f"tagger {files.label} outputs {loaded.n_outputs} tags but {files.tags_path} lists {cache.n_tags}"
        )
    batch_size = loaded.fixed_batch or settings.batch_size
    results: dict[str, np.ndarray] = {}
    skipped: list[Skipped] = []
    progress = tagger.Progress(len(pending), log)
    started = time.perf_counter()
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        tensors: list[np.ndarray] = []
        usable: list[Face] = []
        for face in chunk:
            image = decode_image(face.data)
            if image is None:
                skipped.append(Skipped(face.uid, f"{face.image_path} is not a readable image"))
                continue
            try:
                tensors.append(preprocess(image, loaded.input_size))
            except ValueError as exc:
                skipped.append(Skipped(face.uid, f"{face.image_path}: {exc}"))
                continue
            usable.append(face)
        if usable:
            probabilities = loaded.predict(np.stack(tensors))
            if probabilities.ndim != 2 or probabilities.shape[1] != cache.n_tags:
                raise LikenessError(
                    f"tagger {files.label} returned shape {probabilities.shape}, expected [n, {cache.n_tags}]"
                )
            for face, vector in zip(usable, probabilities, strict=True):
                cache.put(face.sha256, vector)
                results[face.sha256] = vector
        progress.advance(len(chunk))
    return Tagging(results, skipped, loaded.provider, loaded.load_seconds, time.perf_counter() - started)


def _stored_and_pending(faces: list[Face], cache: ProbabilityCache) -> tuple[dict[str, np.ndarray], list[Face]]:
    """Stored probabilities by image hash, and one face per image hash the model still has to see."""
    vectors: dict[str, np.ndarray] = {}
    pending: dict[str, Face] = {}
    for face in faces:
        if face.sha256 in vectors or face.sha256 in pending:
            continue
        stored = cache.get(face.sha256)
        if stored is None:
            pending[face.sha256] = face
        else:
            vectors[face.sha256] = stored
    return vectors, list(pending.values())


def _remove_stale_captions(text_dir: Path, current: set[str], log: Log) -> int:
    """Delete the caption files of faces no longer selected; nothing but ``<text_dir>/*.txt`` is touched."""
    removed = 0
    for text_file in sorted(text_dir.glob("*.txt")):
        if text_file.stem not in current and text_file.is_file():
            text_file.unlink()
            removed += 1
    if removed:
        log(f"caption: removed {removed} caption file(s) of faces no longer selected")
    return removed


def caption_faces(
    manifest_tsv: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    settings: Section,
    trigger: str,
    text_dir: str | os.PathLike[str],
    captions_tsv: str | os.PathLike[str],
    stats_json: str | os.PathLike[str],
    log: Log = print,
) -> str:
    """Caption every face of the selection manifest; return a one-line summary (also logged).

    ``images_dir`` holds the dataset images the selection wrote (``<stem>.jpg``); ``settings`` is the
    ``caption`` section (its ``cache_dir`` keeps the probabilities, outside results/). Writes
    ``<text_dir>/<stem>.txt`` (``<trigger>, <class word>, <tags>``), removes the caption files of faces
    no longer selected, and writes the table ``captions_tsv`` (tables.CAPTION_COLUMNS) and the JSON
    ``stats_json`` (counts, provider, model, timings, skipped faces with their reason).
    """
    rules = CaptionRules.from_settings(settings)
    trigger_word = trigger.strip()
    class_word = (settings.class_word or "").strip()
    text_root = Path(text_dir)
    text_root.mkdir(parents=True, exist_ok=True)
    cache_root = Path(settings.cache_dir)

    faces, skipped = collect_faces(read_manifest(manifest_tsv), Path(images_dir))
    if not faces:  # nothing selected: no model needed, only stale captions to clear
        return _no_faces(text_root, captions_tsv, stats_json, skipped, log)
    files = model.locate_model(settings, cache_root, log)
    table = model.read_tag_table(files.tags_path)
    key = model_key(files, cache_root / HASH_MEMO)
    cache = ProbabilityCache(cache_root, key, len(table))

    vectors, pending = _stored_and_pending(faces, cache)
    from_cache = sum(1 for face in faces if face.sha256 in vectors)
    log(f"caption: {len(faces)} faces, {from_cache} with stored probabilities, model {files.label}")
    tagging = Tagging({}, [], "none (all probabilities stored)", 0.0, 0.0)
    if pending:
        tagging = _tag_missing(pending, files, cache, settings, log)
        vectors.update(tagging.vectors)
        skipped.extend(tagging.skipped)

    rows: list[tuple[str, str]] = []
    stems: set[str] = set()
    changed = 0
    for face in faces:
        vector = vectors.get(face.sha256)
        if vector is None:
            continue  # unreadable image: already in ``skipped``
        # A masked face's PNG: the tagger saw its masked regions composited on white (WD14's own
        # handling of transparency), and tags for several people are dropped (rules.GROUP_TAGS_FILE).
        tags = caption_tags(vector, table, rules, masked=has_alpha_mask(face.image_path))
        text = caption_line(trigger_word, class_word, tags)
        changed += write_if_changed(text_root / f"{face.stem}.txt", (text + "\n").encode("utf-8"))
        rows.append((face.uid, text))
        stems.add(face.stem)
    removed = _remove_stale_captions(text_root, stems, log)
    for item in skipped:
        log(f"caption: skipped face {item.uid or '(no uid)'}: {item.reason}")

    tables.write_table(captions_tsv, tables.CAPTION_COLUMNS, rows)  # unchanged bytes keep their mtime
    model_runs = len(tagging.vectors)
    stats = {
        # An unreadable image is counted among the faces and the skipped ones (as before the move).
        "faces": len(faces) + len(skipped),
        "captioned": len(rows),
        "model_runs": model_runs,
        "from_cache": from_cache,
        "captions_changed": changed,
        "sidecars_removed": removed,
        "provider": tagging.provider,
        "model": files.label,
        "model_key": key,
        "load_seconds": round(tagging.load_seconds, 3),
        "inference_seconds": round(tagging.inference_seconds, 3),
        "skipped": [{"marker_uid": item.uid, "reason": item.reason} for item in skipped],
    }
    atomic_write_json(stats_json, stats)
    summary = f"captioned {len(rows)} faces, model ran on {model_runs} images, provider {tagging.provider}"
    if skipped:
        summary += f", {len(skipped)} skipped"
    log(f"caption: {summary}")
    return summary


def _no_faces(
    text_root: Path,
    captions_tsv: str | os.PathLike[str],
    stats_json: str | os.PathLike[str],
    skipped: list[Skipped],
    log: Log,
) -> str:
    removed = _remove_stale_captions(text_root, set(), log)
    tables.write_table(captions_tsv, tables.CAPTION_COLUMNS, [])
    atomic_write_json(
        stats_json,
        {
            "faces": len(skipped),
            "captioned": 0,
            "model_runs": 0,
            "from_cache": 0,
            "captions_changed": 0,
            "sidecars_removed": removed,
            "provider": "none",
            "skipped": [{"marker_uid": item.uid, "reason": item.reason} for item in skipped],
        },
    )
    summary = "captioned 0 faces: the training set is empty"
    log(f"caption: {summary}")
    return summary
