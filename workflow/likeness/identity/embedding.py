"""The identity model's interface: an embedding, a box, the model protocol, distances (no model code:
likeness.identity.dlib_model implements it, likeness.identity loads it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

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
