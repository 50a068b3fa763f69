"""Reason 10, "not the same person": the identity check, and what identity.json records of it.

Every candidate face is embedded by the identity model (cached, likeness.identity), the person's
reference is built (likeness.select.reference) and faces farther from it than the threshold
(``select.max_identity_distance``: a distance, ``model`` for the model's own threshold, or null for no
check) are excluded. Where PhotoPrism stored its own embeddings, its verdict is recorded beside ours.
"""

from __future__ import annotations

import base64
import importlib.util
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from likeness import identity
from likeness.config import Section
from likeness.errors import LikenessError
from likeness.identity.workers import embed_crops
from likeness.select.faces import Face
from likeness.select.reference import Reference, reference_from_faces, reference_from_folder, robust_centre
from likeness.tables import Reason

# PhotoPrism's own similarity distance for faces of one cluster (its internal/ai/face thresholds,
# ClusterDist): used to read its stored embeddings (markers.embeddings_json) the way it does.
PHOTOPRISM_CLUSTER_DIST = 0.64


def decode_photoprism_embedding(text: str) -> np.ndarray | None:
    """markers.tsv's embedding column (base64 float32, likeness.export.records) -> vector, or None."""
    if not text:
        return None
    try:
        vector = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.float32)
    except (ValueError, TypeError):
        return None
    return vector if vector.size >= 2 and np.all(np.isfinite(vector)) else None


def crop_face_box(record: Mapping[str, Any]) -> identity.Box:
    """The face box in the crop image's pixels (the record's boxes are in photo pixels)."""
    left, top, side = (int(v) for v in record["crop_box"][:3])
    scale = int(record.get("output_side") or side) / side
    x0, y0, x1, y1 = (int(v) for v in record["face_box"])
    return (
        round((x0 - left) * scale),
        round((y0 - top) * scale),
        round((x1 - left) * scale),
        round((y1 - top) * scale),
    )


def check_identity(
    faces: Sequence[Face], settings: Section, log: Callable[[str], None], workers: int = 1
) -> dict[str, Any]:
    """Reason 10: embed every candidate (cached), build the reference, exclude faces too far from it.

    Returns what identity.json records: the model, threshold, reference and its centre.
    """
    if settings.max_identity_distance is None:
        installed = importlib.util.find_spec("dlib") is not None
        note = "" if installed else " (and the identity model is not installed)"
        log(f"identity check off: select.max_identity_distance is null{note}; faces of other people are not caught")
        return {"enabled": False}
    try:
        model = identity.load_model()
    except identity.IdentityModelMissing as error:
        hint = "to select without the identity check set select.max_identity_distance: null"
        raise LikenessError(f"{error}; {hint}") from None
    threshold = model.threshold if settings.max_identity_distance == "model" else float(settings.max_identity_distance)
    cache = identity.EmbeddingCache(settings.identity_cache_dir, model)
    candidates = [f for f in faces if not f.reason_key]
    started = time.monotonic()
    crops = [(f.crop_path, crop_face_box(f.record or {})) for f in candidates]
    for face, embedding in zip(candidates, embed_crops(model, cache, crops, workers, log), strict=True):
        face.identity = embedding
        if embedding is None:
            face.exclude(Reason.UNREADABLE, f"crop image {face.crop_path} cannot be read or decoded")
    embedded = [f for f in candidates if f.identity is not None and not f.reason_key]
    seconds = time.monotonic() - started
    speed = f", {seconds / cache.computed:.3f} s/face, {workers} process(es)" if cache.computed else ""
    log(f"identity: {len(embedded)} faces, {cache.hits} from cache, {cache.computed} computed ({model.name}{speed})")
    summary: dict[str, Any] = {"enabled": True, "model": model.name, "model_key": model.key, "threshold": threshold}
    if not embedded:
        return summary
    if settings.identity_reference in ("recent", "all"):
        reference = reference_from_faces(
            [f.identity.vector for f in embedded],  # type: ignore[union-attr]
            [f.taken_at for f in embedded],
            settings.identity_reference,
            threshold,
            [f.marker_uid for f in embedded],
        )
    else:
        reference = reference_from_folder(settings.identity_reference, model, cache, threshold)
    far = 0
    for face in embedded:
        face.identity_distance = round(identity.distance(face.identity.vector, reference.centre), 4)  # type: ignore[union-attr]
        if face.identity_distance > threshold:
            far += 1
            face.exclude(
                Reason.NOT_THE_SAME_PERSON,
                "",
                text=f"not the same person: distance {face.identity_distance:.2f} > {threshold:.2f} from the reference",
            )
    log(f"identity reference: {reference.description}; {far} faces farther than {threshold:.2f}")
    disagree = compare_with_photoprism(embedded, reference, threshold)
    if disagree:
        log(f"identity: PhotoPrism's own embeddings disagree on {len(disagree)} faces ({', '.join(disagree)})")
    summary["photoprism_disagrees"] = disagree
    summary.update(
        reference=reference.description,
        reference_centre=[round(float(v), 6) for v in reference.centre],
    )
    return summary


def compare_with_photoprism(faces: Sequence[Face], reference: Reference, threshold: float) -> list[str]:
    """Where PhotoPrism stored its own embeddings (markers.embeddings_json), measure each face's distance
    to their centre over the same reference faces, and note the faces on which PhotoPrism
    (PHOTOPRISM_CLUSTER_DIST) and the identity model come to different answers. Returns their UIDs.
    """
    vectors = {f.marker_uid: decode_photoprism_embedding((f.marker or {}).get("embedding", "")) for f in faces}
    usable = [f for f in faces if vectors[f.marker_uid] is not None]
    sizes = {vectors[f.marker_uid].shape for f in usable}  # type: ignore[union-attr]
    if len(usable) < 2 or len(sizes) != 1:
        return []
    members = [f for f in usable if reference.members_uids is None or f.marker_uid in reference.members_uids]
    centre, _ = robust_centre(np.array([vectors[f.marker_uid] for f in (members or usable)]), PHOTOPRISM_CLUSTER_DIST)
    disagree = []
    for face in usable:
        pp = round(identity.distance(vectors[face.marker_uid], centre), 4)  # type: ignore[arg-type]
        face.pp_identity_distance = pp
        pp_same = pp <= PHOTOPRISM_CLUSTER_DIST
        ours_same = (face.identity_distance or 0.0) <= threshold
        if pp_same != ours_same:
            face.identity_note = (
                f"PhotoPrism's embeddings say {'the same' if pp_same else 'another'} person"
                f" ({pp:.2f} {'<=' if pp_same else '>'} {PHOTOPRISM_CLUSTER_DIST}),"
                f" the identity model {'the same' if ours_same else 'another'}"
                f" ({face.identity_distance:.2f} {'<=' if ours_same else '>'} {threshold:.2f})"
            )
            disagree.append(face.marker_uid)
    return disagree


def selected_centre(selected: Sequence[Face], summary: Mapping[str, Any]) -> list[float] | None:
    """The robust centre of the selected faces: what a generated headshot is compared with."""
    vectors = [f.identity.vector for f in selected if f.identity is not None]
    if not vectors or not summary.get("enabled"):
        return None
    centre, _ = robust_centre(np.array(vectors), float(summary["threshold"]))
    return [round(float(v), 6) for v in centre]
