"""The crop rules' side of the crop stage: each face's job parameters, the job, the summary table.

The rules give every path (the record, the image, the log, the summary); nothing here names a file of
its own. Each job takes ``log`` (likeness.joblog) and is run through ``run_logged``.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from likeness import tables
from likeness.config import Section
from likeness.crop.cropping import crop_face

# A path Snakemake would read as holding a wildcard (its own pattern, snakemake_interface_storage_plugins).
_WILDCARD = re.compile(r"\{\s*[.\w]+\s*(,[^{}]*)?\}")


def spec_for(marker: Any, manager: str = "") -> dict[str, Any]:
    """The per-face parameters of a crop job: everything that, when it changes, must re-crop the face.

    ``marker`` is a located export row (likeness.export.photos.locate_photos): its path, or the reason its
    photo cannot be read; ``manager`` the export's (likeness.export.records.Export.manager): which frame
    the photo is shown in and whose words the reasons use.
    """
    path = marker.path if marker.usable else ""
    path_reason = "" if marker.usable else marker.reason
    return {
        "marker_uid": marker.marker_uid,
        "stem": marker.stem,
        "file_uid": marker.file_uid,
        "file_root": marker.file_root,
        "file_name": marker.file_name,
        "path": path,
        "path_reason": path_reason,
        "x": marker.x,
        "y": marker.y,
        "w": marker.w,
        "h": marker.h,
        "file_width": marker.file_width,
        "file_height": marker.file_height,
        "file_orientation": marker.file_orientation,
        "manager": manager,
    }


def photo_input(spec: dict[str, Any]) -> list[str]:
    """The photo as the crop job's input, where Snakemake takes its path literally; else no input.

    Snakemake reads ``{name}`` in any input path as a wildcard, and has no escape for it, so a file name
    such as ``party {2019}.jpg`` would stop the whole run. Such a photo is not declared; its stat
    fingerprint (:func:`photo_fingerprint`) is a param instead, so replacing it still re-crops its faces.
    """
    path = spec["path"]
    return [path] if path and not _WILDCARD.search(path) else []


def photo_fingerprint(spec: dict[str, Any]) -> str:
    """Size and modification time of a photo that is not declared as an input ('' for those that are)."""
    path = spec["path"]
    if not path or not _WILDCARD.search(path):
        return ""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    return f"{info.st_size} bytes, mtime {info.st_mtime_ns} ns"


def crop_job(
    spec: dict[str, Any], settings: Section, image_path: str, record_path: str, *, log: Callable[[str], None]
) -> dict[str, Any]:
    """The crop rule's body: crop one face to the rule's image and record, and log the outcome in one line."""
    record = crop_face(spec, settings, image_path, record_path)
    outcome = "ok" if record["status"] == "ok" else f"excluded: {record['reason']}"
    log(f"{spec['marker_uid']} {spec.get('path') or spec.get('file_name')}: {outcome}")
    return record


def write_summary(record_paths: list[str], table_path: str) -> str:
    """One row per face (cropped or excluded with its reason); returns the summary line."""
    rows = []
    for path in sorted(record_paths):
        record = json.loads(Path(path).read_text())
        rows.append(
            [
                record["marker_uid"],
                record["status"],
                record["reason"],
                str(record.get("native_crop_side", "")),
                str(record.get("output_side", "")),
                record["source"].get("path") or record["source"].get("file_name", ""),
            ]
        )
    tables.write_table(table_path, tables.CROP_SUMMARY_COLUMNS, rows)
    # Count by the reason's kind ("photo missing on disk"), not its per-file detail.
    reasons = Counter(row[2].split(":")[0] for row in rows if row[1] != "ok")
    cropped = sum(1 for row in rows if row[1] == "ok")
    detail = "; ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    return f"cropped {cropped} of {len(rows)} faces" + (f", excluded {detail}" if detail else "")


def export_exclusions(markers_path: str) -> str:
    """A line counting the faces the export gave no crop job, by what happened to their photo
    (archived, trashed, hidden, offline, missing: tables.photo_state) or their reason's kind; '' if none."""
    rows = tables.read_table(markers_path, ("status", "reason"))
    kinds = Counter(
        tables.photo_state(row["reason"]) or row["reason"].split(":")[0] for row in rows if row["status"] == "excluded"
    )
    if not kinds:
        return ""
    detail = "; ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    return f"the export gave {sum(kinds.values())} faces no crop job: {detail} (results/export/markers.tsv)"


def summary_job(record_paths: list[str], table_path: str, *, markers: str = "", log: Callable[[str], None]) -> None:
    """The crop summary rule's body: the table, and its summary line in the log (with the export's)."""
    log(write_summary(record_paths, table_path))
    line = export_exclusions(markers) if markers else ""
    if line:
        log(line)
