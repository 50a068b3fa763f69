"""Caption sidecars for the selected faces: ``<trigger>, <class word>, <WD14 tags>`` in ``<uid>.txt``.

The tagger's raw probabilities are stored per face, keyed by the image's content and the model, so
adding k faces runs the model on k images, and changing a threshold or a tag list only rewrites text.
Caption rules follow sd-scripts' WD14 script: general and character thresholds, tags in the tagger's
order, ``--remove_underscore`` (only in tags longer than 3 characters, so ``^_^`` stays). On top of it:
exclusions, replacements, and pruning of tags that describe the person's fixed traits (hair and eye
colour, facial hair, ...) so that the trigger word learns them instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from likeness import tables
from likeness.atomic import atomic_write_bytes, atomic_write_json, write_if_changed
from likeness.caption import tagger
from likeness.caption.tagger import CHARACTER_CATEGORY, GENERAL_CATEGORY, RATING_CATEGORY, Log, TagTable
from likeness.errors import ConfigError, LikenessError
from likeness.names import STEM_PATTERN, file_stem

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_TRAIT_TAGS_FILE = REPO_ROOT / "resources" / "tagger" / "trait_tags.txt"
DEFAULT_MODEL = "SmilingWolf/wd-vit-tagger-v3"
DEFAULT_REVISION = "790b0e92cefd2a0221451604e7831fe643ab7c4f"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CAPTION_COLUMNS = ("marker_uid", "caption")
SIDECAR_RECORD = "sidecars.json"  # in the cache dir: which caption files this stage wrote
HASH_MEMO = "file_hashes.json"
STANDIN_DIR = "standin-model"
PROVIDERS = ("auto", "cpu", "cuda")


# ------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class CaptionSettings:
    model: str = DEFAULT_MODEL
    revision: str | None = DEFAULT_REVISION
    model_dir: str | None = None
    standin: bool = False
    hub_cache: str | None = None
    cache_dir: str = "cache/captions"
    provider: str = "auto"
    batch_size: int = 8
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    include_rating: bool = False
    remove_underscore: bool = True
    exclude_tags: tuple[str, ...] = ()
    replace_tags: tuple[tuple[str, str], ...] = ()
    prune_traits: bool = True
    trait_tags_file: str | None = None
    class_word: str = "person"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> CaptionSettings:
        """Read the ``caption`` config section: defaults for absent keys, a ConfigError for bad ones."""
        section = dict(section or {})
        known = {name for name in cls.__dataclass_fields__ if name != "extra"}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"caption.{unknown[0]}", f"unknown key (known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        for name in ("model", "cache_dir"):
            if name in section:
                values[name] = _text(section[name], name, allow_empty=False)
        for name in ("revision", "model_dir", "hub_cache", "trait_tags_file"):
            if section.get(name) is not None:
                values[name] = _text(section[name], name, allow_empty=False)
            elif name in section:
                values[name] = None
        for name in ("standin", "include_rating", "remove_underscore", "prune_traits"):
            if name in section:
                if not isinstance(section[name], bool):
                    raise ConfigError(f"caption.{name}", f"expected true or false, got {section[name]!r}")
                values[name] = section[name]
        for name in ("general_threshold", "character_threshold"):
            if name in section:
                value = section[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                    raise ConfigError(f"caption.{name}", f"expected a number from 0 to 1, got {value!r}")
                values[name] = float(value)
        if "batch_size" in section:
            value = section["batch_size"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError("caption.batch_size", f"expected a whole number >= 1, got {value!r}")
            values["batch_size"] = value
        if "provider" in section:
            if section["provider"] not in PROVIDERS:
                raise ConfigError("caption.provider", f"expected one of {', '.join(PROVIDERS)}")
            values["provider"] = section["provider"]
        if "class_word" in section:
            values["class_word"] = _caption_word(section["class_word"], "caption.class_word", allow_empty=True)
        if "exclude_tags" in section:
            values["exclude_tags"] = _tag_list(section["exclude_tags"], "exclude_tags")
        if "replace_tags" in section:
            values["replace_tags"] = _tag_mapping(section["replace_tags"], "replace_tags")
        return cls(**values)


def _text(value: Any, name: str, allow_empty: bool) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ConfigError(f"caption.{name}", f"expected a non-empty string, got {value!r}")
    return value.strip()


def _caption_word(value: Any, key: str, allow_empty: bool) -> str:
    if value is None and allow_empty:
        return ""
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {value!r}")
    word = value.strip()
    if not word and not allow_empty:
        raise ConfigError(key, "must not be empty")
    if "," in word or "\n" in word or "\r" in word:
        raise ConfigError(key, f"must not contain a comma or a line break: {value!r}")
    return word


def _tag_list(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ConfigError(f"caption.{name}", "expected a list of non-empty tag strings")
    return tuple(item.strip() for item in value)


def _tag_mapping(value: Any, name: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(f"caption.{name}", "expected a mapping of tag: replacement")
    pairs = []
    for source, target in value.items():
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(f"caption.{name}", f"tag names must be non-empty strings, got {source!r}")
        if not isinstance(target, str) or not target.strip() or "\n" in target:
            raise ConfigError(f"caption.{name}", f"replacement for {source!r} must be a one-line string")
        pairs.append((source.strip(), target.strip()))
    return tuple(pairs)


# -------------------------------------------------------------------------------- caption text


def tag_key(tag: str) -> str:
    """How tag names are compared: case, spaces and underscores don't matter ('Brown hair' = 'brown_hair')."""
    return " ".join(tag.replace("_", " ").lower().split())


def display_tag(name: str, remove_underscore: bool) -> str:
    """sd-scripts' ``--remove_underscore``: only tags longer than 3 characters, so kaomoji keep theirs."""
    return name.replace("_", " ") if remove_underscore and len(name) > 3 else name


def read_trait_tags(path: str | os.PathLike[str]) -> frozenset[str]:
    """Tag keys from a trait list: one tag a line; blank lines and lines starting with '#' are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError("caption.trait_tags_file", f"cannot read {path}: {exc.strerror or exc}") from None
    return frozenset(tag_key(line) for line in lines if line.strip() and not line.lstrip().startswith("#"))


@dataclass(frozen=True)
class CaptionRules:
    """Everything but the probabilities that decides a caption."""

    general_threshold: float = 0.35
    character_threshold: float = 0.85
    include_rating: bool = False
    remove_underscore: bool = True
    excluded: frozenset[str] = frozenset()  # tag keys
    replacements: Mapping[str, str] = field(default_factory=dict)  # tag key -> text
    traits: frozenset[str] = frozenset()  # tag keys pruned (empty when pruning is off)

    @classmethod
    def from_settings(cls, settings: CaptionSettings) -> CaptionRules:
        traits: frozenset[str] = frozenset()
        if settings.prune_traits:
            traits = read_trait_tags(settings.trait_tags_file or DEFAULT_TRAIT_TAGS_FILE)
        return cls(
            general_threshold=settings.general_threshold,
            character_threshold=settings.character_threshold,
            include_rating=settings.include_rating,
            remove_underscore=settings.remove_underscore,
            excluded=frozenset(tag_key(tag) for tag in settings.exclude_tags),
            replacements={tag_key(source): target for source, target in settings.replace_tags},
            traits=traits,
        )


def _passes(probability: np.float32, category: int, rules: CaptionRules) -> bool:
    # Compared in float32, as numpy compares sd-scripts' float32 outputs with a Python float threshold:
    # a probability stored as float32(0.35) passes the threshold 0.35.
    if category == GENERAL_CATEGORY:
        return bool(probability >= np.float32(rules.general_threshold))
    if category == CHARACTER_CATEGORY:
        return bool(probability >= np.float32(rules.character_threshold))
    return False  # ratings are chosen by argmax below; other categories are not WD14 caption tags


def _final_text(name: str, rules: CaptionRules) -> str | None:
    """The caption text for one tag the model emitted, or None when a rule drops it."""
    key = tag_key(name)
    if key in rules.traits or key in rules.excluded:
        return None
    text = rules.replacements.get(key, display_tag(name, rules.remove_underscore))
    return None if tag_key(text) in rules.excluded else text


def caption_tags(probabilities: np.ndarray, table: TagTable, rules: CaptionRules) -> list[str]:
    """Tags for one face, in the tagger's order; the rating, when wanted, comes last."""
    if probabilities.shape != (len(table),):
        raise ValueError(f"expected {len(table)} probabilities, got shape {probabilities.shape}")
    chosen = [
        table.names[index]
        for index, (probability, category) in enumerate(zip(probabilities, table.categories, strict=True))
        if _passes(np.float32(probability), category, rules)
    ]
    if rules.include_rating:
        ratings = [index for index, category in enumerate(table.categories) if category == RATING_CATEGORY]
        if ratings:
            chosen.append(table.names[max(ratings, key=lambda index: probabilities[index])])
    texts = (_final_text(name, rules) for name in chosen)
    return [text for text in texts if text is not None]


def caption_line(trigger: str, class_word: str, tags: Iterable[str]) -> str:
    """``trigger, class word, tag, ...`` with duplicates (after replacement) dropped."""
    words: list[str] = []
    seen: set[str] = set()
    for word in (trigger, class_word, *tags):
        key = tag_key(word)
        if word and key not in seen:
            seen.add(key)
            words.append(word)
    return ", ".join(words)


# --------------------------------------------------------------------------- probability cache


class ProbabilityCache:
    """``<root>/<model_key>/<image_sha256>.npy``: one float32 vector per image and model."""

    def __init__(self, root: Path, key: str, n_tags: int) -> None:
        self.folder = root / key
        self.n_tags = n_tags

    def path(self, image_sha256: str) -> Path:
        return self.folder / f"{image_sha256}.npy"

    def get(self, image_sha256: str) -> np.ndarray | None:
        """The stored vector, or None when absent or unusable (then it is computed again)."""
        try:
            vector = np.load(self.path(image_sha256), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if vector.shape != (self.n_tags,) or not np.all(np.isfinite(vector)):
            return None
        return vector.astype(np.float32, copy=False)

    def put(self, image_sha256: str, vector: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(vector, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(self.path(image_sha256), buffer.getvalue())


# ---------------------------------------------------------------------------------- the stage

_SAFE_STEM = re.compile(STEM_PATTERN)


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
    for suffix in IMAGE_SUFFIXES:
        candidate = images_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    crop = (row.get("image") or "").strip()
    return Path(crop) if crop and Path(crop).is_file() else None


def collect_faces(rows: Sequence[Mapping[str, str]], images_dir: Path) -> tuple[list[Face], list[Skipped]]:
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


def locate_model(settings: CaptionSettings, cache_root: Path, log: Log) -> tagger.ModelFiles:
    if settings.standin:
        from likeness.caption import standin_tagger

        folder = standin_tagger.build(cache_root / STANDIN_DIR)
        files = tagger.local_model_files(folder, "caption.standin")
        return tagger.ModelFiles(files.onnx_path, files.tags_path, "offline stand-in (its tags mean nothing)")
    if settings.model_dir:
        return tagger.local_model_files(settings.model_dir)
    return tagger.hub_model_files(settings.model, settings.revision, settings.hub_cache, log)


def _tag_missing(
    pending: list[Face],
    files: tagger.ModelFiles,
    cache: ProbabilityCache,
    settings: CaptionSettings,
    log: Log,
) -> tuple[dict[str, np.ndarray], list[Skipped], str, float, float]:
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
            image = tagger.decode_image(face.data)
            if image is None:
                skipped.append(Skipped(face.uid, f"{face.image_path} is not a readable image"))
                continue
            try:
                tensors.append(tagger.preprocess(image, loaded.input_size))
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
    return results, skipped, loaded.provider, loaded.load_seconds, time.perf_counter() - started


def _remove_stale_sidecars(images_dir: Path, record_path: Path, current: set[str], log: Log) -> int:
    """Delete caption files of faces no longer selected: those this stage wrote before, and ``.txt``
    files whose image is gone (kohya would ignore them). Nothing but ``<images_dir>/*.txt`` is touched."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        previous = set(record.get("stems", record.get("uids", [])))  # "uids": records of older versions
    except (OSError, ValueError, AttributeError, TypeError):
        previous = set()
    candidates = {stem for stem in previous if _SAFE_STEM.fullmatch(str(stem))}
    if images_dir.is_dir():
        for text_file in images_dir.glob("*.txt"):
            if not any((images_dir / f"{text_file.stem}{suffix}").exists() for suffix in IMAGE_SUFFIXES):
                candidates.add(text_file.stem)
    removed = 0
    for stem in sorted(candidates - current):
        target = images_dir / f"{stem}.txt"
        if target.is_file():
            target.unlink()
            removed += 1
    if removed:
        log(f"caption: removed {removed} caption file(s) of faces no longer selected")
    return removed


def run_captions(
    manifest_tsv: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None,
    cfg: Mapping[str, Any] | None,
    trigger: str,
    captions_tsv: str | os.PathLike[str],
    stats_json: str | os.PathLike[str] | None = None,
    class_word: str | None = None,
    log: Log = print,
) -> str:
    """Write ``<images_dir>/<uid>.txt`` for every selected face, the table ``captions_tsv`` and the
    stats JSON; return a one-line summary. ``cfg`` is the ``caption`` config section; ``cache_dir``
    (None: ``caption.cache_dir``) keeps the probabilities and survives ``--delete-all-output``."""
    settings = CaptionSettings.from_config(cfg)
    trigger_word = _caption_word(trigger, "trigger", allow_empty=False)
    word = settings.class_word if class_word is None else _caption_word(class_word, "caption.class_word", True)
    rules = CaptionRules.from_settings(settings)
    images_root = Path(images_dir)
    cache_root = Path(cache_dir if cache_dir is not None else settings.cache_dir)

    faces, skipped = collect_faces(read_manifest(manifest_tsv), images_root)
    if not faces:  # nothing selected: no model needed, only stale sidecars to clear
        return _no_faces(images_root, cache_root, captions_tsv, stats_json, skipped, log)
    files = locate_model(settings, cache_root, log)
    table = tagger.read_tag_table(files.tags_path)
    key = tagger.model_key(files, cache_root / HASH_MEMO)
    cache = ProbabilityCache(cache_root, key, len(table))

    vectors: dict[str, np.ndarray] = {}
    pending: list[Face] = []
    for face in faces:
        if face.sha256 in vectors:
            continue
        stored = cache.get(face.sha256)
        if stored is None:
            if all(face.sha256 != other.sha256 for other in pending):
                pending.append(face)
        else:
            vectors[face.sha256] = stored
    from_cache = sum(1 for face in faces if face.sha256 in vectors)
    log(f"caption: {len(faces)} faces, {from_cache} with stored probabilities, model {files.label}")

    provider, load_seconds, inference_seconds = "none (all probabilities stored)", 0.0, 0.0
    model_runs = 0
    if pending:
        fresh, unreadable, provider, load_seconds, inference_seconds = _tag_missing(
            pending, files, cache, settings, log
        )
        vectors.update(fresh)
        skipped.extend(unreadable)
        model_runs = len(fresh)

    rows: list[tuple[str, str]] = []
    stems: set[str] = set()
    changed = 0
    for face in faces:
        vector = vectors.get(face.sha256)
        if vector is None:
            continue  # unreadable image: already in ``skipped``
        text = caption_line(trigger_word, word, caption_tags(vector, table, rules))
        changed += write_if_changed(images_root / f"{face.stem}.txt", (text + "\n").encode("utf-8"))
        rows.append((face.uid, text))
        stems.add(face.stem)

    record_path = cache_root / SIDECAR_RECORD
    removed = _remove_stale_sidecars(images_root, record_path, stems, log)
    atomic_write_json(record_path, {"images_dir": str(images_root), "stems": sorted(stems)})
    for item in skipped:
        log(f"caption: skipped face {item.uid or '(no uid)'}: {item.reason}")

    atomic_write_bytes(captions_tsv, tables.table_bytes(CAPTION_COLUMNS, rows))
    stats = {
        "faces": len(faces) + len(skipped),
        "captioned": len(rows),
        "model_runs": model_runs,
        "from_cache": from_cache,
        "captions_changed": changed,
        "sidecars_removed": removed,
        "provider": provider,
        "model": files.label,
        "model_key": key,
        "load_seconds": round(load_seconds, 3),
        "inference_seconds": round(inference_seconds, 3),
        "skipped": [{"marker_uid": item.uid, "reason": item.reason} for item in skipped],
    }
    if stats_json is not None:
        atomic_write_json(stats_json, stats)
    summary = f"captioned {len(rows)} faces, model ran on {model_runs} images, provider {provider}"
    if skipped:
        summary += f", {len(skipped)} skipped"
    log(f"caption: {summary}")
    return summary


def _no_faces(
    images_root: Path,
    cache_root: Path,
    captions_tsv: str | os.PathLike[str],
    stats_json: str | os.PathLike[str] | None,
    skipped: list,
    log: Log,
) -> str:
    record_path = cache_root / SIDECAR_RECORD
    removed = _remove_stale_sidecars(images_root, record_path, set(), log)
    atomic_write_json(record_path, {"images_dir": str(images_root), "stems": []})
    atomic_write_bytes(captions_tsv, tables.table_bytes(CAPTION_COLUMNS, []))
    if stats_json is not None:
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
                "skipped": [{"marker_uid": i.uid, "reason": i.reason} for i in skipped],
            },
        )
    summary = "captioned 0 faces: the training set is empty"
    log(f"caption: {summary}")
    return summary


def run_captions_job(
    manifest_tsv: str,
    cfg: Mapping[str, Any],
    trigger: str,
    captions_tsv: str,
    stats_json: str,
    log: Log = print,
    images_dir: str = "results/dataset/images",
) -> str:
    """The caption rule's body: captions next to the dataset images, progress and summary in the log."""
    return run_captions(manifest_tsv, images_dir, None, cfg, trigger, captions_tsv, stats_json, log=log)
