"""The best epoch with real photos planted as headshots, scored by the real identity model (dlib).

An epoch whose one good headshot is the closest of all but whose other headshots show no face (or two
faces) must lose to an epoch whose headshots all show the person: a headshot without exactly one face
counts against its epoch, and results/lora/<trigger>.json says how many of each epoch's were scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from likeness import identity
from likeness.config import validate_section
from likeness.joblog import run_logged
from likeness.train import best_epoch
from synthlib.drawing import background, paste_portrait
from synthlib.portraits import PORTRAITS, relit


def _write(path: Path, image: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return str(path)


def _scene(portraits: list[np.ndarray], seed: int) -> np.ndarray:
    """A 1024 px 'headshot': the portraits pasted side by side on a textured backdrop (none: no face)."""
    canvas = background(1024, 1024, seed=seed)
    for index, portrait in enumerate(portraits):
        side = 900 if len(portraits) == 1 else 460
        cx = 512 if len(portraits) == 1 else 260 + index * 500
        paste_portrait(canvas, portrait, cx, 512, side)
    return canvas


@pytest.fixture(scope="module")
def model() -> identity.IdentityModel:
    return identity.load_model()


def test_an_epoch_of_faceless_headshots_loses_to_one_that_shows_the_person(tmp_path: Path, model) -> None:
    grace = cv2.imread(str(PORTRAITS / "grace_hopper.jpg"))
    eileen = cv2.imread(str(PORTRAITS / "eileen_collins.jpg"))
    # The centre of the "selected training faces": Grace Hopper's portrait as it is.
    faces = model.detect(_scene([grace], seed=1))
    assert len(faces) == 1
    centre = faces[0].vector

    shots = tmp_path / "shots"
    # Epoch 1: Grace Hopper exactly as the centre saw her (distance ~0), then two empty backdrops and a
    # photo of two people: one of four headshots has one face.
    epoch1 = [
        _write(shots / "e1" / "0.png", _scene([grace], seed=1)),
        _write(shots / "e1" / "1.png", _scene([], seed=2)),
        _write(shots / "e1" / "2.png", _scene([], seed=3)),
        _write(shots / "e1" / "3.png", _scene([grace, eileen], seed=4)),
    ]
    # Epoch 2: Grace Hopper in four other lights, each a little farther from the centre.
    epoch2 = [
        _write(shots / "e2" / f"{i}.png", _scene([relit(grace, gain, offset, tint)], seed=10 + i))
        for i, (gain, offset, tint) in enumerate(
            [
                (0.8, 10, (1.0, 0.95, 1.1)),
                (1.15, -15, (1.1, 1.0, 0.9)),
                (0.9, 20, (0.9, 1.05, 1.0)),
                (1.2, 0, (1.0,) * 3),
            ]
        )
    ]
    loras = {e: tmp_path / "output" / f"face-{e:06d}.safetensors" for e in (1, 2)}
    for epoch, path in loras.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"lora of epoch {epoch}".encode())
    status = tmp_path / "headshots.json"
    status.write_text(
        json.dumps(
            {
                "state": "done",
                "run_id": "r1",
                "prompts": ["p0", "p1", "p2", "p3"],
                "epochs": [
                    {"epoch": 1, "lora": str(loras[1]), "images": epoch1},
                    {"epoch": 2, "lora": str(loras[2]), "images": epoch2},
                ],
            }
        )
    )
    identity_json = tmp_path / "identity.json"
    identity_json.write_text(
        json.dumps(
            {
                "enabled": True,
                "model": model.name,
                "model_key": model.key,
                "threshold": model.threshold,
                "selected_centre": [float(v) for v in centre],
            }
        )
    )
    out = tmp_path / "lora" / "ohwx.json"
    record = run_logged(
        tmp_path / "log", best_epoch.best_lora_stage, status, identity_json,
        validate_section("select", {"identity_cache_dir": str(tmp_path / "cache")}),
        trigger="ohwx", class_word="woman", out_json=out,
    )  # fmt: skip
    print(f"\nchosen epoch {record['epoch']}: {record['why']}")
    one, two = record["scores"]["1"], record["scores"]["2"]
    print(f"epoch 1: {[(i['distance'], i['note']) for i in one['images']]}")
    print(f"epoch 2: {[i['distance'] for i in two['images']]}")
    # The planted images are what they say: epoch 1's first headshot is the closest of all.
    assert [i["note"] for i in one["images"]] == ["", "no face found", "no face found", "2 faces found"]
    assert all(i["distance"] is not None for i in two["images"])
    assert one["images"][0]["distance"] < min(i["distance"] for i in two["images"])
    # Counted against its epoch, the faceless headshots make epoch 1 lose.
    assert record["epoch"] == 2
    assert (one["scored"], one["headshots"], two["scored"], two["headshots"]) == (1, 4, 4, 4)
    assert one["median"] == record["miss_distance"] == best_epoch.miss_distance(model.threshold)
    assert two["median"] < one["median"]
    assert "4 headshots, 4 with one face" in record["why"] and "(1 of 4 scored)" in record["why"]
    assert (tmp_path / "lora" / "ohwx.safetensors").read_bytes() == b"lora of epoch 2"
    assert json.loads(out.read_text())["scores"]["1"]["scored"] == 1
