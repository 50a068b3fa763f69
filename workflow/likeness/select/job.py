"""The select rule's job: read the faces, run reasons 1-13 in order, write what the rule declares."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from likeness import tables
from likeness.atomic import write_if_changed
from likeness.config import Section, section_settings
from likeness.joblog import JobLog
from likeness.select import freshness, masks
from likeness.select.dataset_images import sync_images
from likeness.select.faces import Face, gather_faces
from likeness.select.filters import apply_filters, check_record, check_settings
from likeness.select.identity_check import check_identity, selected_centre
from likeness.select.outputs import excluded_bytes, identity_json_bytes, image_name, manifest_bytes, summary_line
from likeness.select.ranking import choose, rank_score, score_parts

# The columns of the export's markers.tsv and neighbours.tsv that the selection cannot do without: it
# requires only these (one readable error names a missing one) and reads any other column when present.
MARKER_COLUMNS_READ = ("marker_uid", "marker_review", "subj_src", "score", "taken_at", "status", "reason")
NEIGHBOUR_COLUMNS_READ = ("marker_uid", "file_uid", "x", "y", "w", "h")


@dataclass(frozen=True)
class SelectOutputs:
    """The paths the select rule declares: the two tables, identity.json and the dataset images folder."""

    manifest: str | os.PathLike[str]
    excluded: str | os.PathLike[str]
    identity: str | os.PathLike[str]
    images: str | os.PathLike[str]

    def images_from_manifest(self) -> str:
        """The images folder as the manifest's image column names it: relative to the manifest's folder."""
        return Path(os.path.relpath(self.images, Path(self.manifest).parent)).as_posix()


def run_selection(
    crop_json_paths: Sequence[str],
    markers_tsv: str | os.PathLike[str],
    neighbours_tsv: str | os.PathLike[str],
    settings: Section,
    outputs: SelectOutputs,
    log: Callable[[str], None],
    workers: int = 1,
) -> str:
    """Select the training set and write ``outputs``.

    ``settings`` is the frozen ``select`` section. Relative crop image paths in the records are resolved
    against the working directory (the workflow's root). The tables and identity.json are rewritten
    only when their content changes; the images folder is synced file by file. ``log`` gets the identity
    check's lines; ``workers`` processes embed new faces. Returns the one-line summary,
    e.g. "kept 60 of 214 faces: too small 80, blurred 30, duplicate 20".
    """
    window = check_settings(settings)
    markers = tables.read_table(markers_tsv, MARKER_COLUMNS_READ)
    neighbours_by_file: dict[str, list[dict[str, str]]] = {}
    for row in tables.read_table(neighbours_tsv, NEIGHBOUR_COLUMNS_READ):
        neighbours_by_file.setdefault(row["file_uid"], []).append(row)

    faces = gather_faces(crop_json_paths, markers)
    dated = [f.taken_at for f in faces if f.taken_at is not None]
    newest = max(dated) if dated else None
    for face in faces:
        check_record(face, neighbours_by_file)
        if not face.reason_key:
            # Scored before the filters so that excluded.tsv shows the score of filtered faces too.
            face.score_parts = score_parts(face, newest)
            face.score = rank_score(face, newest)
        apply_filters(face, settings, window)
    identity_summary = check_identity(faces, settings, log, workers)
    selected = choose([f for f in faces if not f.reason_key], settings)
    identity_summary["selected_centre"] = selected_centre(selected, identity_summary)

    sync_images(dataset_images(selected), outputs.images)
    write_if_changed(outputs.manifest, manifest_bytes(selected, outputs.images_from_manifest()))
    write_if_changed(outputs.excluded, excluded_bytes([f for f in faces if f.reason_key]))
    write_if_changed(outputs.identity, identity_json_bytes(identity_summary))
    return summary_line(selected, faces)


def dataset_images(selected: Sequence[Face]) -> dict[str, str | bytes]:
    """File name -> the crop to link, or a masked face's PNG bytes (its mask made again here)."""
    wanted: dict[str, str | bytes] = {}
    for face in selected:
        if face.masked:
            alpha = masks.face_mask(face.record or {}, face.other_faces)
            if alpha is not None:
                wanted[image_name(face)] = masks.masked_png(face.crop_path, alpha)
                continue
            face.masked = False  # cannot happen (the filter made the same mask), but keeps name and bytes one
        wanted[image_name(face)] = face.crop_path
    return wanted


def select_faces(
    inputs: Any, outputs: Any, settings: Mapping[str, Any], workers: int = 1, *, inputs_key: str = "", log: JobLog
) -> str:
    """The select rule's job (through likeness.joblog.run_logged): select, then log the summary line.

    ``inputs`` and ``outputs`` are the rule's named input and output lists (records, markers, neighbours;
    manifest, excluded, identity, images, selection): every path comes from the rule. ``inputs_key``: the
    key the Snakefile computed (likeness.select.freshness), recorded in ``outputs.selection``. ``settings``
    is the validated ``select`` section as the rule passes it (a plain dict).
    """
    line = run_selection(
        inputs.records,
        inputs.markers,
        inputs.neighbours,
        section_settings("select", settings),
        SelectOutputs(outputs.manifest, outputs.excluded, outputs.identity, outputs.images),
        log,
        workers,
    )
    if inputs_key:  # what the next dry run compares with (likeness.select.freshness)
        freshness.write_record(outputs.selection, inputs_key, tables.count_rows(outputs.manifest) or 0)
    log(line)
    return line
