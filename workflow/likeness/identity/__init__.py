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
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from likeness.atomic import atomic_write_json
from likeness.identity.embedding import (
    Box,
    Embedding,
    IdentityModel,
    IdentityModelMissing,
    box_iou,
    distance,
)

__all__ = [  # the interface (likeness.identity.embedding) and what this module adds: loading, the cache
    "Box",
    "Embedding",
    "EmbeddingCache",
    "IdentityModel",
    "IdentityModelMissing",
    "box_iou",
    "decode",
    "detect_faces",
    "distance",
    "embed_crop",
    "load_model",
]


def load_model() -> IdentityModel:
    """The identity model; IdentityModelMissing (one line) when its packages are not installed."""
    # Imported here: dlib itself is imported only when a model is loaded.
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
