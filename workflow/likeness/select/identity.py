"""Face identity: is this face the person? One small model interface, cached embeddings, distances.

The model (``IdentityModel``) does two things: embed a face given its box in an image, and find and
embed every face in an image (generated headshots). The one implementation here is dlib's ResNet face
descriptor (128-d, ``dlib_face_recognition_resnet_model_v1``; same person below 0.6 Euclidean on LFW),
with dlib's HOG frontal detector and 68-point landmarks, from the PyPI packages ``dlib-bin`` and
``face-recognition-models`` (the model files are inside the package, so it runs offline). Another model
can replace it by implementing the same three attributes and two methods.

Embedding a crop: the crop is shrunk so its longer side is ``DETECT_SIDE`` pixels (a face at crop factor
2.2 is then ~145 px, comfortably above the HOG detector's ~80 px minimum and above the 150 px chip the
descriptor reads), dlib's detector runs on it and the detection that overlaps the marker's box most is
used; when it finds none (a profile, a hat, an odd angle) the marker's box itself is used and the result
says so. The landmarks give the descriptor's aligned chip and the head pose (yaw, pitch).

Embeddings are cached under ``<cache>/<model key>/<sha256 of crop bytes + box>.json``: a crop is
embedded once, whatever run or setting asks again.

The person's reference is a robust centre: among the reference faces, the one with the most others
within the threshold seeds a group, and the mean of the faces within the threshold of the group's mean
(twice refined) is the centre. A minority of wrong faces, even a large one, does not move it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from likeness.atomic import atomic_write_json
from likeness.errors import ConfigError, LikenessError

# The packages and versions pinned in pyproject.toml; named in the message when they are missing.
MODEL_PACKAGES = "dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
DLIB_THRESHOLD = 0.6  # dlib's published same-person distance (99.38 % on LFW)
DETECT_SIDE = 320  # crops are shrunk to this side for detection, landmarks and the descriptor
GENERATED_DETECT_SIDE = 512  # generated images: faces may be smaller within the frame
MIN_DETECTION_IOU = 0.3  # a detection must overlap the marker box this much to stand for it
RECENT_YEARS = 3.0  # "recent": faces taken within this many years of the newest face ...
MIN_REFERENCE_FACES = 10  # ... but at least this many (the newest ones) when fewer are that recent
REFERENCE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# PhotoPrism's own similarity distance for faces of one cluster (its internal/ai/face thresholds,
# ClusterDist): used to read its stored embeddings (markers.embeddings_json) the way it does.
PHOTOPRISM_CLUSTER_DIST = 0.64

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in the image's pixels


class IdentityModelMissing(LikenessError):
    """The identity model's packages are not installed."""


@dataclass(frozen=True)
class Embedding:
    """One face as the identity model sees it."""

    vector: np.ndarray  # float32, the model's descriptor
    box: Box  # where the face was found (or the marker box, when detected is False)
    detected: bool  # the model's own detector found the face
    yaw: float  # head pose in degrees from the landmarks: left/right turn ...
    pitch: float  # ... and up/down tilt (0, 0 = looking into the camera)

    def to_json(self) -> dict[str, Any]:
        return {
            "vector": [round(float(v), 7) for v in self.vector],
            "box": list(self.box),
            "detected": self.detected,
            "yaw": round(self.yaw, 2),
            "pitch": round(self.pitch, 2),
        }

    @classmethod
    def from_json(cls, data: Any, dimension: int) -> Embedding | None:
        """The stored embedding, or None when it is unusable (then it is computed again)."""
        try:
            vector = np.asarray(data["vector"], dtype=np.float32)
            box = tuple(int(v) for v in data["box"])
            embedding = cls(vector, box, bool(data["detected"]), float(data["yaw"]), float(data["pitch"]))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            return None
        if vector.shape != (dimension,) or not np.all(np.isfinite(vector)) or len(box) != 4:
            return None
        return embedding


class IdentityModel(Protocol):
    """What the workflow needs from a face-identity model."""

    name: str  # for logs and reports
    key: str  # changes when the model or its preprocessing changes (the cache's folder)
    threshold: float  # the model's same-person distance
    dimension: int

    def embed(self, image_bgr: np.ndarray, box: Box) -> Embedding: ...

    def detect(self, image_bgr: np.ndarray) -> list[Embedding]: ...


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


# ---------------------------------------------------------------------------------------- dlib


def _model_folder() -> Path:
    """face_recognition_models' folder of .dat files, found without importing the package (its
    __init__ needs pkg_resources, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityModelMissing(f"the identity model is not installed (pip install {MODEL_PACKAGES})")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


# Head pose from landmarks, by proportions of an average head (frontal: nose tip midway between the
# outer eye corners; it sits NOSE_EYE_RATIO of the way from the eye line to the mouth line). The nose
# tip stands NOSE_DEPTH (in half eye-distances) in front of the eye corners, so turning the head by
# yaw moves it sideways by NOSE_DEPTH * tan(yaw) half eye-distances; tilting moves it up or down.
NOSE_DEPTH = 0.6
NOSE_EYE_RATIO = 0.53
NOSE_DEPTH_VERTICAL = 0.42  # nose depth in units of the eye-to-mouth distance


def head_pose(points: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees from dlib's 68 landmarks; positive yaw = nose towards image right,
    positive pitch = looking down. Symmetric by construction: a mirrored face gives -yaw."""
    eye_left, eye_right = points[36], points[45]
    mouth = (points[48] + points[54]) / 2
    nose = points[30]
    eyes = (eye_left + eye_right) / 2
    half_eye = max(np.linalg.norm(eye_right - eye_left) / 2, 1e-6)
    axis = (eye_right - eye_left) / (2 * half_eye)  # along the eye line (in-plane rotation removed)
    normal = np.array([-axis[1], axis[0]])  # towards the mouth
    sideways = float(np.dot(nose - eyes, axis)) / half_eye
    eye_to_mouth = max(float(np.dot(mouth - eyes, normal)), 1e-6)
    down = float(np.dot(nose - eyes, normal)) / eye_to_mouth - NOSE_EYE_RATIO
    yaw = math.degrees(math.atan(sideways / NOSE_DEPTH))
    pitch = math.degrees(math.atan(down / NOSE_DEPTH_VERTICAL))
    return round(yaw, 2), round(pitch, 2)


class DlibModel:
    """dlib's ResNet face descriptor with its HOG detector and 68-point landmarks."""

    name = "dlib ResNet face descriptor v1 (128-d)"
    threshold = DLIB_THRESHOLD
    dimension = 128

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as error:
            raise IdentityModelMissing(
                f"the identity model is not installed ({error}; pip install {MODEL_PACKAGES})"
            ) from None
        folder = _model_folder()
        files = {
            "descriptor": folder / "dlib_face_recognition_resnet_model_v1.dat",
            "landmarks": folder / "shape_predictor_68_face_landmarks.dat",
        }
        missing = [str(path) for path in files.values() if not path.is_file()]
        if missing:
            raise IdentityModelMissing(
                f"identity model files missing: {', '.join(missing)} (pip install {MODEL_PACKAGES})"
            )
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(files["landmarks"]))
        self._descriptor = dlib.face_recognition_model_v1(str(files["descriptor"]))
        versions = f"dlib-{dlib.__version__}_frm-{importlib.metadata.version('face_recognition_models')}"
        self.key = f"{versions}_side{DETECT_SIDE}_v1"

    @staticmethod
    def _shrunk(image_bgr: np.ndarray, side: int) -> tuple[np.ndarray, float]:
        height, width = image_bgr.shape[:2]
        scale = min(1.0, side / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image_bgr = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)
        if image_bgr.ndim == 2:
            image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
        return np.ascontiguousarray(cv2.cvtColor(image_bgr[:, :, :3], cv2.COLOR_BGR2RGB)), scale

    def _detections(self, rgb: np.ndarray) -> list[Box]:
        found = self._detector(rgb, 0)
        if len(found) == 0:
            found = self._detector(rgb, 1)  # one upsampling: 4x the pixels, only when nothing was found
        return [(r.left(), r.top(), r.right(), r.bottom()) for r in found]

    def _describe(self, rgb: np.ndarray, box: Box, scale: float, detected: bool) -> Embedding:
        rect = self._dlib.rectangle(*(int(v) for v in box))
        shape = self._landmarks(rgb, rect)
        vector = np.asarray(self._descriptor.compute_face_descriptor(rgb, shape), dtype=np.float32)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        yaw, pitch = head_pose(points)
        original = tuple(round(v / scale) for v in box)
        return Embedding(vector, original, detected, yaw, pitch)  # type: ignore[arg-type]

    def embed(self, image_bgr: np.ndarray, box: Box) -> Embedding:
        rgb, scale = self._shrunk(image_bgr, DETECT_SIDE)
        marker = tuple(round(v * scale) for v in box)
        best, best_iou = None, 0.0
        for found in self._detections(rgb):
            overlap = box_iou(found, marker)  # type: ignore[arg-type]
            if overlap > best_iou:
                best, best_iou = found, overlap
        if best is not None and best_iou >= MIN_DETECTION_IOU:
            return self._describe(rgb, best, scale, True)
        return self._describe(rgb, marker, scale, False)  # type: ignore[arg-type]

    def detect(self, image_bgr: np.ndarray) -> list[Embedding]:
        rgb, scale = self._shrunk(image_bgr, GENERATED_DETECT_SIDE)
        return [self._describe(rgb, found, scale, True) for found in self._detections(rgb)]


def load_model() -> IdentityModel:
    """The identity model; IdentityModelMissing (one line) when its packages are not installed."""
    return DlibModel()


def box_iou(a: Box, b: Box) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ---------------------------------------------------------------------------------------- cache


class EmbeddingCache:
    """``<root>/<model key>/<sha256>.json``: one embedding per crop content and face box."""

    def __init__(self, root: str | Path, model: IdentityModel) -> None:
        self.folder = Path(root) / model.key
        self.dimension = model.dimension
        self.hits = 0
        self.computed = 0

    @staticmethod
    def content_key(data: bytes, box: Box | None) -> str:
        digest = hashlib.sha256(data)
        digest.update(json.dumps(list(box) if box is not None else "detect").encode())
        return digest.hexdigest()

    def get(self, key: str) -> Any:
        try:
            return json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None

    def put(self, key: str, value: Any) -> None:
        atomic_write_json(self.folder / f"{key}.json", value)


def decode_photoprism_embedding(text: str) -> np.ndarray | None:
    """markers.tsv's embedding column (base64 float32, likeness.export.sources) -> vector, or None."""
    if not text:
        return None
    try:
        vector = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.float32)
    except (ValueError, TypeError):
        return None
    return vector if vector.size >= 2 and np.all(np.isfinite(vector)) else None


def decode(data: bytes) -> np.ndarray | None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return image if image is not None and image.size else None


def embed_crop(model: IdentityModel, cache: EmbeddingCache, data: bytes, box: Box) -> Embedding | None:
    """The face in a crop (JPEG bytes) at ``box``, from the cache or computed once; None if undecodable."""
    key = cache.content_key(data, box)
    stored = Embedding.from_json(cache.get(key), cache.dimension)
    if stored is not None:
        cache.hits += 1
        return stored
    image = decode(data)
    if image is None:
        return None
    embedding = model.embed(image, box)
    cache.computed += 1
    cache.put(key, embedding.to_json())
    return embedding


def detect_faces(model: IdentityModel, cache: EmbeddingCache, data: bytes) -> list[Embedding] | None:
    """Every face the model finds in an image (a generated headshot, a reference photo), cached."""
    key = cache.content_key(data, None)
    stored = cache.get(key)
    if isinstance(stored, list):
        faces = [Embedding.from_json(item, cache.dimension) for item in stored]
        if all(face is not None for face in faces):
            cache.hits += 1
            return faces  # type: ignore[return-value]
    image = decode(data)
    if image is None:
        return None
    faces = model.detect(image)
    cache.computed += 1
    cache.put(key, [face.to_json() for face in faces])
    return faces


PARALLEL_MIN_FACES = 64  # below this, worker processes (~2 s to import and load the model) do not pay


def embed_crops(
    model: IdentityModel, cache: EmbeddingCache, crops: Sequence[tuple[str, Box]], workers: int = 1
) -> list[Embedding | None]:
    """Embed (crop path, box) pairs; uncached ones in ``workers`` processes when there are many.

    dlib holds the GIL while it computes, so threads would not help: each worker is a fresh Python
    process (``python -m likeness.select.identity``) that loads the model once, embeds its share into the
    cache and exits; the results are then read from the cache. None for an unreadable crop.
    """
    datas: list[bytes | None] = []
    for path, _ in crops:
        try:
            datas.append(Path(path).read_bytes())
        except OSError:
            datas.append(None)
    pending = [
        (path, box)
        for (path, box), data in zip(crops, datas, strict=True)
        if data is not None and Embedding.from_json(cache.get(cache.content_key(data, box)), cache.dimension) is None
    ]
    if workers > 1 and len(pending) >= PARALLEL_MIN_FACES:
        _embed_in_workers(pending, cache, workers)
        cache.computed += len(pending)
        cache.hits -= len(pending)  # read back from the cache below, but computed in this run
    return [
        None if data is None else embed_crop(model, cache, data, box)
        for (_, box), data in zip(crops, datas, strict=True)
    ]


def _embed_in_workers(pending: Sequence[tuple[str, Box]], cache: EmbeddingCache, workers: int) -> None:
    shards = [pending[i::workers] for i in range(workers)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    with tempfile.TemporaryDirectory(prefix="likeness-identity-") as folder:
        processes = []
        for index, shard in enumerate(shards):
            jobs = Path(folder) / f"shard{index}.json"
            jobs.write_text(json.dumps({"cache": str(cache.folder.parent), "crops": [[p, list(b)] for p, b in shard]}))
            command = [sys.executable, "-m", "likeness.select.identity", str(jobs)]
            processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        for process in processes:
            _, error = process.communicate()
            if process.returncode != 0:
                lines = error.decode(errors="replace").strip().splitlines()
                raise LikenessError(f"identity worker failed: {lines[-1] if lines else process.returncode}")


def _worker(jobs_path: str) -> None:
    """One worker process: embed the crops listed in ``jobs_path`` into the cache."""
    jobs = json.loads(Path(jobs_path).read_text())
    model = load_model()
    cache = EmbeddingCache(jobs["cache"], model)
    for path, box in jobs["crops"]:
        embed_crop(model, cache, Path(path).read_bytes(), tuple(box))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- reference


@dataclass(frozen=True)
class Reference:
    """The person's reference embedding and how it was made (for the log and the report)."""

    centre: np.ndarray
    source: str  # "recent", "all" or the folder
    faces: int  # faces it was chosen from
    members: int  # faces within the threshold of the centre
    description: str
    members_uids: frozenset[str] | None = None  # which faces those are, when they are faces of the library


def robust_centre(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """The centre of the largest group of mutually similar faces, and that group's size.

    The face with the most others within ``threshold`` (ties: the smaller median distance) seeds the
    group; the centre is the mean of the faces within ``threshold`` of the group's mean, refined twice.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) == 0:
        raise ValueError("no faces to centre")
    pairwise = np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=2)
    counts = (pairwise <= threshold).sum(axis=1)
    medians = np.median(pairwise, axis=1)
    seed = min(range(len(vectors)), key=lambda i: (-counts[i], medians[i], i))
    members = pairwise[seed] <= threshold
    centre = vectors[members].mean(axis=0)
    for _ in range(2):
        near = np.linalg.norm(vectors - centre, axis=1) <= threshold
        if not near.any():
            break
        members = near
        centre = vectors[members].mean(axis=0)
    return centre.astype(np.float32), int(members.sum())


def recent_indices(taken: Sequence[dt.datetime | None]) -> list[int]:
    """Faces taken within RECENT_YEARS of the newest, or the MIN_REFERENCE_FACES newest if fewer."""
    dated = sorted((t, i) for i, t in enumerate(taken) if t is not None)
    if not dated:
        return list(range(len(taken)))
    newest = dated[-1][0]
    since = newest - dt.timedelta(days=365.25 * RECENT_YEARS)
    recent = [i for t, i in dated if t >= since]
    if len(recent) < MIN_REFERENCE_FACES:
        recent = [i for _, i in dated[-MIN_REFERENCE_FACES:]]
    return sorted(recent)


def reference_from_faces(
    vectors: Sequence[np.ndarray],
    taken: Sequence[dt.datetime | None],
    mode: str,
    threshold: float,
    uids: Sequence[str] | None = None,
) -> Reference:
    indices = recent_indices(taken) if mode == "recent" else list(range(len(vectors)))
    chosen = np.array([vectors[i] for i in indices])
    centre, members = robust_centre(chosen, threshold)
    near = np.linalg.norm(chosen - centre, axis=1) <= threshold
    members_uids = frozenset(uids[indices[k]] for k in np.flatnonzero(near)) if uids is not None else None
    if mode == "recent":
        dates = [taken[i] for i in indices if taken[i] is not None]
        since = f" taken since {min(dates):%Y-%m-%d}" if dates else ""
        what = f"{len(indices)} recent faces{since}"
    else:
        what = f"all {len(indices)} candidate faces"
    description = f"{what}, {members} of them within {threshold:.2f} form its centre"
    return Reference(centre, mode, len(indices), members, description, members_uids)


def reference_from_folder(folder: str, model: IdentityModel, cache: EmbeddingCache, threshold: float) -> Reference:
    """The largest face of each photo in ``folder`` (select.identity_reference) makes the reference."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError("select.identity_reference", f"'{folder}' is not recent, all or a folder of photos")
    vectors = []
    for path in sorted(p for p in root.iterdir() if p.suffix.lower() in REFERENCE_SUFFIXES):
        faces = detect_faces(model, cache, path.read_bytes())
        if faces:
            largest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            vectors.append(largest.vector)
    if not vectors:
        raise ConfigError("select.identity_reference", f"no face found in any photo of {folder}")
    centre, members = robust_centre(np.array(vectors), threshold)
    description = f"{len(vectors)} reference photos in {folder}, {members} within {threshold:.2f} form its centre"
    return Reference(centre, folder, len(vectors), members, description)


if __name__ == "__main__":
    _worker(sys.argv[1])
