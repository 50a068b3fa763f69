"""The epoch that looks most like the person (rule ``best_lora``).

Every headshot (likeness.train.headshots) is checked by the identity model (exactly one face) and scored
by its identity distance to the centre of the selected training faces (``results/dataset/identity.json``).
A headshot that cannot be scored (no face, several faces, unreadable) counts against its epoch: it enters
the epoch's median as a miss, at ``MISS_FACTOR`` times the model's same-person distance, farther than any
face of the person. So an epoch whose headshots mostly show no face has a median of a miss and loses to
one whose headshots all show the person, however close its one good headshot came. An epoch's score is
that median over all its headshots; the lowest wins. Its LoRA is copied to
``results/lora/<trigger>.safetensors`` and ``results/lora/<trigger>.json`` says which epoch, why, and
every epoch's score, how many of its headshots were scored, and every image's distance, beside the trigger,
the class word, the prompts and the base model the LoRA belongs to (name, revision, sha256).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from likeness import identity
from likeness.atomic import atomic_write_bytes, atomic_write_json
from likeness.config import Section
from likeness.errors import LikenessError
from likeness.joblog import JobLog
from likeness.summary import hint
from likeness.train.status import require_record


def unrecorded_base_model() -> dict[str, Any]:
    """The base model entry when the headshots' record has none (written by an earlier likeness): said, not
    guessed, with the command that records it (the headshots job again; no epoch is rendered twice)."""
    again = f"{hint('best_lora')} --forcerun headshots"
    return {
        "name": None,
        "file": None,
        "revision": None,
        "sha256": None,
        "sha256_from": f"not recorded: the headshots' record predates the base model entry (run `{again}`)",
    }


def lora_stem(trigger: str) -> str:
    """The file name stem of results/lora/<trigger>.*: the trigger with anything but [A-Za-z0-9._-] as _."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", trigger.strip()).strip("._") or "lora"


@dataclass(frozen=True)
class Scored:
    path: str
    distance: float | None
    note: str  # "" when scored; otherwise why not (no face, 2 faces, unreadable)


def score_image(model: identity.IdentityModel, cache: identity.EmbeddingCache, path: str, centre: np.ndarray) -> Scored:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return Scored(path, None, f"unreadable: {error.strerror or error}")
    faces = identity.detect_faces(model, cache, data)
    if faces is None:
        return Scored(path, None, "not an image")
    if len(faces) != 1:
        return Scored(path, None, "no face found" if not faces else f"{len(faces)} faces found")
    return Scored(path, round(identity.distance(faces[0].vector, centre), 4), "")


# A headshot without exactly one face counts as this many times the model's same-person distance (dlib: 0.6,
# so 1.2): beyond the distance of any face that is the person, so it never helps its epoch.
MISS_FACTOR = 2.0


def miss_distance(threshold: float) -> float:
    """The distance an unscored headshot counts as, for a model whose same-person distance is ``threshold``."""
    return round(MISS_FACTOR * threshold, 4)


def choose_epoch(scores: Mapping[int, Sequence[Scored]], miss: float) -> tuple[int | None, dict[int, float | None]]:
    """The epoch with the lowest median distance over all its headshots, each unscored one counted as
    ``miss`` (ties: more headshots scored, then the later epoch); None when no headshot of any epoch was
    scored. Epochs without a scored headshot get the median None and are never chosen."""
    medians: dict[int, float | None] = {}
    for epoch, images in scores.items():
        if not any(s.distance is not None for s in images):
            medians[epoch] = None
            continue
        values = [miss if s.distance is None else s.distance for s in images]
        medians[epoch] = round(statistics.median(values), 4)
    ranked = sorted((m, -scored_count(scores[e]), -e) for e, m in medians.items() if m is not None)
    return (-ranked[0][2] if ranked else None), medians


def scored_count(images: Sequence[Scored]) -> int:
    return sum(s.distance is not None for s in images)


def best_lora_stage(
    headshots_status: str | Path,
    identity_json: str | Path,
    select: Section,
    *,
    trigger: str,
    class_word: str,
    out_json: str | Path,
    log: JobLog,
) -> dict[str, Any]:
    """The best_lora rule's job: score every headshot, pick the epoch, copy its LoRA beside ``out_json``;
    returns the record. ``select``: the select settings (the identity cache)."""
    shots = require_record(headshots_status)
    out_json = Path(out_json)
    lora_out = out_json.with_suffix(".safetensors")
    say = log

    def finish(record: dict[str, Any]) -> dict[str, Any]:
        atomic_write_json(out_json, record)
        return record

    if shots.get("state") != "done" or not shots.get("epochs"):
        say(f"best LoRA: no headshots yet (headshots {shots.get('state', 'not run')})")
        return finish({"state": "waiting", "reason": f"headshots are {shots.get('state', 'not run')}"})
    summary = require_record(identity_json)
    epochs = {int(e["epoch"]): e for e in shots["epochs"]}
    record: dict[str, Any] = {
        "state": "done",
        "trigger": trigger,
        "class_word": class_word,
        "run_id": shots["run_id"],
        "prompts": shots["prompts"],
        "base_model": shots.get("base_model") or unrecorded_base_model(),
        "lora": str(lora_out),
    }
    centre = summary.get("selected_centre")
    if not summary.get("enabled") or not centre:
        epoch = max(epochs)
        why = "the identity check is off (select.max_identity_distance is null): the last epoch, unscored"
        say(f"best LoRA: epoch {epoch}; {why}")
        record.update(epoch=epoch, why=why, scores={})
    else:
        model = identity.load_model()
        if model.key != summary.get("model_key"):
            raise LikenessError(
                f"results/dataset/identity.json was made with {summary.get('model_key')}, this model is {model.key}:"
                " run the select_faces rule again"
            )
        cache = identity.EmbeddingCache(select.identity_cache_dir, model)
        vector = np.asarray(centre, dtype=np.float32)
        scores = {e: [score_image(model, cache, p, vector) for p in epochs[e]["images"]] for e in sorted(epochs)}
        miss = miss_distance(model.threshold)
        epoch, medians = choose_epoch(scores, miss)
        if epoch is None:
            epoch = max(epochs)
            why = "no headshot of any epoch showed exactly one face: the last epoch, unscored"
            if not shots["prompts"]:
                why = "train.headshot_prompts is empty: the last epoch, unscored"
        else:
            runner = sorted((m, e) for e, m in medians.items() if m is not None and e != epoch)
            after = (
                f"; next best epoch {runner[0][1]} at {runner[0][0]:.3f}"
                f" ({scored_count(scores[runner[0][1]])} of {len(scores[runner[0][1]])} scored)"
                if runner
                else ""
            )
            why = (
                f"lowest median identity distance to the selected training faces: {medians[epoch]:.3f}"
                f" over {len(scores[epoch])} headshots, {scored_count(scores[epoch])} with one face"
                f" (each other one counted as {miss:g}){after}"
            )
        say(f"best LoRA: epoch {epoch}; {why} ({cache.computed} headshots checked now, {cache.hits} from cache)")
        for e in sorted(scores):
            cells = " ".join("-" if s.distance is None else f"{s.distance:.3f}" for s in scores[e])
            median = medians[e] if medians[e] is not None else "-"
            say(f"  epoch {e}: median {median}, {scored_count(scores[e])} of {len(scores[e])} scored  [{cells}]")
        record.update(
            epoch=epoch,
            why=why,
            threshold=summary.get("threshold"),
            model=summary.get("model"),
            miss_distance=miss,
            scores={
                str(e): {
                    "median": medians[e],
                    "scored": scored_count(scores[e]),
                    "headshots": len(scores[e]),
                    "lora": epochs[e]["lora"],
                    "images": [{"path": s.path, "distance": s.distance, "note": s.note} for s in scores[e]],
                }
                for e in sorted(scores)
            },
        )
    source = Path(epochs[record["epoch"]]["lora"])
    atomic_write_bytes(lora_out, source.read_bytes())
    record["source_lora"] = str(source)
    say(f"best LoRA: {lora_out} (epoch {record['epoch']}, from {source})")
    return finish(record)
