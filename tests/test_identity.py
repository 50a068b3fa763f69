"""The identity check: dlib's face descriptor on the demo's two public-domain portraits, for real.

The acceptance test builds a PhotoPrism library whose person "Grace Hopper" also holds photos of
Eileen Collins (both portraits pasted at different sizes, angles and lighting), runs the workflow
through the snakemake CLI and checks that every Eileen Collins face, and only those, is excluded as
not the same person; a second run embeds nothing again.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.runs import KEEP_ALL, copy_workflow, snakemake, write_config
from fixtures.stage_inputs import read_tsv_rows
from likeness import identity
from likeness.config import Section, validate_config
from likeness.errors import ConfigError, LikenessError
from likeness.identity import dlib_model
from likeness.identity import workers as identity_workers
from likeness.select.faces import Face
from likeness.select.identity_check import compare_with_photoprism
from likeness.select.ranking import choose, pose_bin
from likeness.select.reference import Reference, recent_indices, reference_from_folder, robust_centre
from synthlib.portraits import PORTRAITS, build_two_person_library

WITH_IDENTITY = {**KEEP_ALL, "max_identity_distance": "model"}


def portrait(name: str) -> np.ndarray:
    return cv2.imread(str(PORTRAITS / f"{name}.jpg"))


@pytest.fixture(scope="module")
def model() -> identity.IdentityModel:
    return identity.load_model()


def test_the_model_tells_the_two_portraits_apart_and_finds_their_faces(model) -> None:
    grace, eileen = (model.detect(portrait(n)) for n in ("grace_hopper", "eileen_collins"))
    assert len(grace) == 1 and len(eileen) == 1
    apart = identity.distance(grace[0].vector, eileen[0].vector)
    # The same face shrunk, turned by 10 degrees and darkened is still the same person.
    image = portrait("grace_hopper")
    side = image.shape[0]
    turned = cv2.warpAffine(image, cv2.getRotationMatrix2D((side / 2, side / 2), 10, 0.8), (side, side))
    altered = model.embed(cv2.convertScaleAbs(turned, alpha=0.7, beta=-10), (0, 0, side, side))
    same = identity.distance(grace[0].vector, altered.vector)
    print(f"distance Hopper-Collins {apart:.3f}, Hopper-altered Hopper {same:.3f}")
    assert altered.detected
    assert same < model.threshold < apart


def test_a_face_without_detection_falls_back_to_the_marker_box(model) -> None:
    blank = np.full((300, 300, 3), 128, np.uint8)
    embedding = model.embed(blank, (50, 50, 250, 250))
    assert not embedding.detected and embedding.vector.shape == (128,) and embedding.box == (50, 50, 250, 250)
    assert model.detect(blank) == []


def test_head_pose_sign_follows_the_nose() -> None:
    points = np.zeros((68, 2))
    points[36], points[45] = (100, 100), (200, 100)
    points[48], points[54] = (120, 200), (180, 200)
    points[30] = (150, 153)  # frontal: midway, 0.53 of the way to the mouth line
    assert dlib_model.head_pose(points) == pytest.approx((0.0, 0.0), abs=0.5)
    points[30] = (180, 153)
    yaw, _ = dlib_model.head_pose(points)
    points[30] = (120, 153)
    assert yaw > 20 and dlib_model.head_pose(points)[0] == pytest.approx(-yaw)
    points[30] = (150, 180)
    assert dlib_model.head_pose(points)[1] > 20


def test_robust_centre_ignores_a_large_minority() -> None:
    rng = np.random.default_rng(0)
    person = rng.normal(0, 0.02, (12, 128)) + 0.1
    other = rng.normal(0, 0.02, (8, 128)) - 0.1
    vectors = np.vstack([other, person])
    centre, members = robust_centre(vectors, 0.6)
    assert members == 12
    assert np.linalg.norm(centre - person.mean(axis=0)) < 0.05


def test_recent_faces_are_those_of_the_last_three_years_or_the_ten_newest() -> None:
    old = [dt.datetime(2010, 1, 1 + i) for i in range(10)]
    new = [dt.datetime(2023, 1, 1 + i) for i in range(12)]
    assert recent_indices([*old, *new, None]) == list(range(10, 22))
    assert recent_indices([*old, *new[:3]]) == list(range(3, 13))


def test_cache_embeds_each_crop_content_once(model, tmp_path: Path) -> None:
    data = cv2.imencode(".jpg", portrait("eileen_collins"))[1].tobytes()
    cache = identity.EmbeddingCache(tmp_path, model)
    first = identity.embed_crop(model, cache, data, (0, 0, 150, 150))
    again = identity.EmbeddingCache(tmp_path, model)
    second = identity.embed_crop(model, again, data, (0, 0, 150, 150))
    assert (cache.computed, again.computed, again.hits) == (1, 0, 1)
    assert np.allclose(first.vector, second.vector, atol=1e-6)
    # Another box of the same crop is another face.
    identity.embed_crop(model, again, data, (10, 10, 140, 140))
    assert again.computed == 1


def select_settings(**keys) -> Section:
    """The select section as the workflow validates it: the schema's defaults, then ``keys``."""
    return validate_config({"person": "Grace Hopper", "source": {"url": "sqlite:///index.db"}, "select": keys}).select


def test_settings_of_the_identity_check() -> None:
    assert select_settings().max_identity_distance == "model"
    assert select_settings(max_identity_distance=None).max_identity_distance is None
    assert select_settings(max_identity_distance=0.5).max_identity_distance == 0.5
    with pytest.raises(ConfigError, match=r"select\.max_identity_distance"):
        select_settings(max_identity_distance="close")
    with pytest.raises(ConfigError, match=r"select\.max_identity_distance"):
        select_settings(max_identity_distance=0)


def _run_without_dlib(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Python with dlib made unimportable, as for a user who removed the identity model."""
    prelude = "import sys; sys.modules['dlib'] = None; sys.path.insert(0, 'workflow')\n"
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=root, capture_output=True, text=True, check=False
    )


def test_without_the_model_the_check_is_off_only_when_configured(tmp_path: Path) -> None:
    code = """
        from likeness.config import validate_config
        from likeness.errors import LikenessError
        from likeness.select.faces import Face
        from likeness.select.identity_check import check_identity
        def settings(**keys):
            return validate_config({"person": "P", "source": {"url": "sqlite:///x.db"}, "select": keys}).select
        faces = [Face("m1")]
        try:
            check_identity(faces, settings(), print)
        except LikenessError as error:
            print("ERROR", error)
        check_identity(faces, settings(max_identity_distance=None), print)
    """
    result = _run_without_dlib(code, tmp_path)
    lines = result.stdout.splitlines()
    print(result.stdout, result.stderr)
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("ERROR the identity model is not installed")
    assert "pip install dlib-bin==" in lines[0] and "select.max_identity_distance: null" in lines[0]
    assert lines[1].startswith("identity check off: select.max_identity_distance is null")
    assert "not installed" in lines[1]


def test_missing_model_error_is_a_likeness_error() -> None:
    assert issubclass(identity.IdentityModelMissing, LikenessError)


@pytest.mark.snakemake
def test_faces_of_another_person_are_excluded_and_the_right_ones_pass(tmp_path: Path) -> None:
    truth = build_two_person_library(tmp_path / "library", photoprism_embeddings=True)
    workdir = copy_workflow(tmp_path / "wf")
    write_config(workdir, tmp_path / "library", person="Grace Hopper", select=WITH_IDENTITY)
    snakemake(workdir, "--cores", "2", "results/dataset/manifest.tsv")

    manifest = {r["marker_uid"]: r for r in read_tsv_rows(workdir / "results/dataset/manifest.tsv")}
    excluded = {r["marker_uid"]: r for r in read_tsv_rows(workdir / "results/dataset/excluded.tsv")}
    print("\nmarker_uid        true person     identity distance  outcome")
    for uid, person in sorted(truth.items(), key=lambda item: item[1]):
        row = manifest.get(uid) or excluded[uid]
        outcome = "selected" if uid in manifest else excluded[uid]["reason"]
        print(f"{uid}  {person:<15} {row['identity_distance']:>17}  {outcome}")
    others = {uid for uid, person in truth.items() if person == "eileen_collins"}
    assert set(manifest) == set(truth) - others
    for uid in others:
        assert excluded[uid]["reason_key"] == "not the same person"
        distance = float(excluded[uid]["identity_distance"])
        assert excluded[uid]["reason"] == f"not the same person: distance {distance:.2f} > 0.60 from the reference"
    assert all(float(row["identity_distance"]) <= 0.6 for row in manifest.values())
    # PhotoPrism's own embeddings (stored as its clustering left them) say "same person" for all of them:
    # recorded beside ours, and the faces where the two disagree are exactly the other person's.
    assert {row["pp_face_dist"] for row in [*manifest.values(), *excluded.values()]} == {"0.3"}
    assert {uid for uid, row in excluded.items() if row["identity_note"]} == others
    assert not any(row["identity_note"] for row in manifest.values())
    note = excluded[next(iter(others))]["identity_note"]
    assert note.startswith("PhotoPrism's embeddings say the same person (") and "the identity model another" in note
    log = (workdir / "logs/select_faces.log").read_text()
    assert f"identity: {len(truth)} faces, 0 from cache, {len(truth)} computed" in log
    assert f"identity: PhotoPrism's own embeddings disagree on {len(others)} faces" in log

    # A second selection (another top_n) embeds nothing: every crop's embedding is cached.
    write_config(workdir, tmp_path / "library", person="Grace Hopper", select={**WITH_IDENTITY, "top_n": 5})
    snakemake(workdir, "--cores", "2", "results/dataset/manifest.tsv")
    log = (workdir / "logs/select_faces.log").read_text()
    assert f"identity: {len(truth)} faces, {len(truth)} from cache, 0 computed" in log
    assert len(read_tsv_rows(workdir / "results/dataset/manifest.tsv")) == 5


def _face(uid: str, score: float, year: int, yaw: float = 0.0, pitch: float = 0.0, vector=None) -> Face:
    face = Face(uid, taken_at=dt.datetime(year, 6, 1), score=score)
    face.record = {"measurements": {"phash": f"{int(uid[1:]) * 0x0F0F0F0F0F0F0F:016x}"[-16:]}}
    vector = np.full(128, int(uid[1:]) * 0.1, np.float32) if vector is None else vector
    face.identity = identity.Embedding(vector, (0, 0, 1, 1), True, yaw, pitch)
    return face


def test_diversity_spreads_top_n_over_years_and_poses() -> None:
    faces = [_face(f"m{i}", 0.9 - i * 0.01, 2024) for i in range(6)]  # six frontal faces of one year, best
    faces += [_face("m7", 0.5, 2024, yaw=30), _face("m8", 0.4, 2019), _face("m9", 0.3, 2019, pitch=25)]
    settings = select_settings(top_n=4, duplicate_distance=0)
    chosen = [f.marker_uid for f in choose(faces, settings)]
    assert chosen == ["m0", "m7", "m8", "m9"]  # one of each stratum, in score order
    assert [pose_bin(f) for f in faces[6:]] == ["turned right, level", "frontal, level", "frontal, down"]
    assert faces[1].reason.startswith("below top_n: rank 2; the 4 kept are spread over years and head poses")
    for face in faces:
        face.reason_key = face.reason = ""
    plain = select_settings(top_n=4, duplicate_distance=0, diversity=False)
    assert [f.marker_uid for f in choose(faces, plain)] == ["m0", "m1", "m2", "m3"]


def test_near_identical_embeddings_are_duplicates() -> None:
    base = np.zeros(128, np.float32)
    near = base.copy()
    near[0] = 0.05
    far = base.copy()
    far[0] = 0.3
    faces = [
        _face("m1", 0.9, 2024, vector=base),
        _face("m2", 0.8, 2024, vector=near),
        _face("m3", 0.7, 2024, vector=far),
    ]
    settings = select_settings(duplicate_distance=0)
    assert [f.marker_uid for f in choose(faces, settings)] == ["m1", "m3"]
    assert faces[1].reason == "duplicate of m1 (identity embeddings 0.050 apart)"
    for face in faces:
        face.reason_key = face.reason = ""
    off = select_settings(duplicate_distance=0, duplicate_identity_distance=0)
    assert len(choose(faces, off)) == 3


def test_a_folder_of_reference_photos_makes_the_reference(model, tmp_path: Path) -> None:
    folder = tmp_path / "me"
    folder.mkdir()
    image = portrait("grace_hopper")
    for index, gain in enumerate((0.8, 1.0, 1.2)):
        big = cv2.resize(cv2.convertScaleAbs(image, alpha=gain), (400, 400))
        cv2.imwrite(str(folder / f"ref{index}.jpg"), big)
    (folder / "notes.txt").write_text("not a photo")
    cache = identity.EmbeddingCache(tmp_path / "cache", model)
    reference = reference_from_folder(str(folder), model, cache, 0.6)
    assert reference.faces == 3 and reference.members == 3
    grace, eileen = (model.detect(portrait(n))[0].vector for n in ("grace_hopper", "eileen_collins"))
    assert identity.distance(grace, reference.centre) < 0.2 < 0.6 < identity.distance(eileen, reference.centre)
    empty = tmp_path / "empty"
    empty.mkdir()
    cv2.imwrite(str(empty / "wall.jpg"), np.full((200, 200, 3), 90, np.uint8))
    with pytest.raises(ConfigError, match=r"select\.identity_reference.*no face found"):
        reference_from_folder(str(empty), model, cache, 0.6)
    with pytest.raises(ConfigError, match=r"select\.identity_reference.*not recent, all or a folder"):
        reference_from_folder(str(tmp_path / "nope"), model, cache, 0.6)


def test_worker_processes_embed_into_the_cache_like_the_job_itself(model, tmp_path: Path, monkeypatch) -> None:
    crops = []
    for index, name in enumerate(("grace_hopper", "eileen_collins", "grace_hopper")):
        path = tmp_path / f"crop{index}.jpg"
        cv2.imwrite(str(path), cv2.resize(portrait(name), (300 - 40 * index, 300 - 40 * index)))
        crops.append((str(path), (0, 0, 300 - 40 * index, 300 - 40 * index)))
    monkeypatch.setattr(identity_workers, "PARALLEL_MIN_FACES", 2)
    parallel = identity.EmbeddingCache(tmp_path / "a", model)
    in_workers = identity_workers.embed_crops(model, parallel, crops, workers=2)
    serial = identity.EmbeddingCache(tmp_path / "b", model)
    in_process = identity_workers.embed_crops(model, serial, crops, workers=1)
    assert (parallel.computed, parallel.hits, serial.computed) == (3, 0, 3)
    for a, b in zip(in_workers, in_process, strict=True):
        assert np.allclose(a.vector, b.vector, atol=1e-5) and a.detected == b.detected
    again = identity.EmbeddingCache(tmp_path / "a", model)
    identity_workers.embed_crops(model, again, crops, workers=2)
    assert (again.computed, again.hits) == (0, 3)


@pytest.mark.snakemake
def test_a_workflow_without_the_identity_model_says_so_in_one_line(tmp_path: Path) -> None:
    build_two_person_library(tmp_path / "library", n_person=3, n_other=0)
    workdir = copy_workflow(tmp_path / "wf")
    # As for a user who removed dlib: every Python the run starts finds no dlib module.
    blocker = tmp_path / "no_dlib"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['dlib'] = None\n")
    env = {"PYTHONPATH": str(blocker)}
    write_config(workdir, tmp_path / "library", person="Grace Hopper", select=WITH_IDENTITY)
    failed = snakemake(workdir, "--cores", "2", "results/dataset/manifest.tsv", check=False, env=env)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    lines = [line for line in output.splitlines() if "identity model is not installed" in line]
    print("\n".join(lines))
    # One message: the job's line, the same line again where Snakemake shows the job's log, and last the
    # closing summary's "select_faces failed: <the same message> (log: ...)".
    assert lines[0].startswith("likeness: the identity model is not installed")
    assert lines[-1].startswith("likeness: select_faces failed: the identity model is not installed")
    messages = {
        re.sub(r"^select_faces failed: ", "", line.split(": ", 1)[1]).removesuffix(" (log: logs/select_faces.log)")
        for line in lines
    }
    assert messages == {lines[0].split(": ", 1)[1]}
    assert "select.max_identity_distance: null" in lines[0]
    assert "Traceback" not in output and "in check_identity" not in output
    assert (workdir / "logs/select_faces.log").read_text().startswith("error: the identity model is not installed")

    write_config(
        workdir, tmp_path / "library", person="Grace Hopper", select={**KEEP_ALL, "max_identity_distance": None}
    )
    passed = snakemake(workdir, "--cores", "2", "results/dataset/manifest.tsv", env=env)
    assert "identity check off: select.max_identity_distance is null (and the identity model is not installed)" in (
        passed.stdout + passed.stderr
    )
    assert len(read_tsv_rows(workdir / "results/dataset/manifest.tsv")) == 3


def test_photoprism_disagreement_is_noted_both_ways() -> None:
    import base64

    def pp(vector) -> str:
        return base64.b64encode(np.asarray(vector, np.float32).tobytes()).decode()

    unit = np.eye(4, dtype=np.float32)
    faces = []
    for uid, ours, theirs in (("m1", 0.1, unit[0]), ("m2", 0.2, unit[0]), ("m3", 0.3, unit[1]), ("m4", 0.8, unit[0])):
        face = _face(uid, 0.5, 2024)
        face.marker = {"embedding": pp(theirs)}
        face.identity_distance = ours
        faces.append(face)
    reference = Reference(np.zeros(128, np.float32), "recent", 4, 3, "", frozenset({"m1", "m2", "m3"}))
    assert compare_with_photoprism(faces, reference, 0.6) == ["m3", "m4"]
    assert faces[2].identity_note.startswith("PhotoPrism's embeddings say another person (1.41 > 0.64)")
    assert faces[3].identity_note.startswith("PhotoPrism's embeddings say the same person (0.00 <= 0.64)")
    assert faces[0].identity_note == "" and faces[0].pp_identity_distance == 0.0
    # Without PhotoPrism's embeddings there is nothing to compare.
    for face in faces:
        face.marker = {}
    assert compare_with_photoprism(faces, reference, 0.6) == []
