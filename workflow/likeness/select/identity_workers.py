"""Embed many crops in worker processes, one per thread the rule grants (dlib holds the GIL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from likeness import WORKFLOW_DIR
from likeness.errors import LikenessError
from likeness.select.identity import Box, Embedding, EmbeddingCache, IdentityModel, embed_crop, load_model

PARALLEL_MIN_FACES = 64  # below this, worker processes (~2 s to import and load the model) do not pay


def embed_crops(
    model: IdentityModel, cache: EmbeddingCache, crops: Sequence[tuple[str, Box]], workers: int = 1
) -> list[Embedding | None]:
    """Embed (crop path, box) pairs; uncached ones in ``workers`` processes when there are many.

    dlib holds the GIL while it computes, so threads would not help: each worker is a fresh Python
    process (``python -m likeness.select.identity_workers``) that loads the model once, embeds its share into the
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
        "PYTHONPATH": os.pathsep.join([str(WORKFLOW_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    with tempfile.TemporaryDirectory(prefix="likeness-identity-") as folder:
        processes = []
        for index, shard in enumerate(shards):
            jobs = Path(folder) / f"shard{index}.json"
            jobs.write_text(json.dumps({"cache": str(cache.folder.parent), "crops": [[p, list(b)] for p, b in shard]}))
            command = [sys.executable, "-m", "likeness.select.identity_workers", str(jobs)]
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


if __name__ == "__main__":
    _worker(sys.argv[1])
