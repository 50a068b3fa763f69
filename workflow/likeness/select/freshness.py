"""Whether the training set on disk is what the selection would choose now, known while the Snakefile is read.

The dry run prices the training from ``results/dataset/images``. That is exact only when the selection
will not run again first; after a change to the select or crop settings, the library or a photo, the
folder still holds the old selection. The select job records a key of everything its result follows
(``results/dataset/selection.json``); the Snakefile computes the same key from the config and the parse-time
export, and a different or missing key means the selection re-runs, so the dry run says its figures are an
upper bound. A code change is not in the key: a developer's case, where Snakemake's code trigger re-runs
the selection and the dry run's figures may be those of the old selection.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from likeness.atomic import atomic_write_json


def _photo_stat(path: str) -> str:
    """Size and modification time of a face's photo (a replaced photo re-crops its faces)."""
    if not path:
        return ""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    return f"{info.st_size}:{info.st_mtime_ns}"


def inputs_key(
    select: Mapping[str, Any],
    crop: Mapping[str, Any],
    crop_code: str,
    export_digest: str,
    face_specs: Mapping[str, Mapping[str, Any]],
) -> str:
    """A short digest of what the selection's result follows: its settings, the crops' settings and code,
    what the database said, and each face's crop parameters and photo."""
    faces = [(stem, dict(spec), _photo_stat(str(spec.get("path") or ""))) for stem, spec in sorted(face_specs.items())]
    document = {"select": select, "crop": crop, "crop_code": crop_code, "export": export_digest, "faces": faces}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_record(path: str | os.PathLike[str], key: str, selected: int) -> None:
    """The select job's record: the key it selected under and how many faces it kept."""
    atomic_write_json(path, {"inputs_key": key, "selected": selected})


def is_current(record: str | os.PathLike[str], key: str, outputs: Iterable[str | os.PathLike[str]]) -> bool:
    """True when the recorded key is ``key`` and every output of the selection is there."""
    try:
        recorded = json.loads(Path(record).read_text(encoding="utf-8")).get("inputs_key")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == key and all(Path(p).exists() for p in outputs)
