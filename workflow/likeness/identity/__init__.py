"""Face identity: is this face the person? One small model interface, cached embeddings, distances.

The model (``IdentityModel``) does two things: embed a face given its box in an image, and find and
embed every face in an image (generated headshots). The one implementation is dlib's ResNet face
descriptor (likeness.identity.dlib_model); another model can replace it by implementing the same three
attributes and two methods.

Embeddings are cached under ``<cache>/<model key>/<sha256 of crop bytes + box>.json``: a crop is
embedded once, whatever run or setting asks again. Many crops are embedded in worker processes
(likeness.identity.workers); the person's reference is likeness.select.reference.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from likeness.atomic import atomic_write_json
from likeness.errors import LikenessError

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


def box_iou(a: Box, b: Box) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def load_model() -> IdentityModel:
    """The identity model; IdentityModelMissing (one line) when its packages are not installed."""
    # Imported here: the implementation builds on this module's interface (Embedding, Box).
    from likeness.identity.dlib_model import DlibModel

    return DlibModel()


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
