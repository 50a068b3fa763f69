"""Embed many crops in worker processes, one per thread the rule grants (dlib holds the GIL)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from likeness import WORKFLOW_DIR
from likeness.errors import LikenessError
from likeness.identity import Box, Embedding, EmbeddingCache, IdentityModel, embed_crop, load_model
from likeness.joblog import PROGRESS_INTERVAL_ENV

PARALLEL_MIN_FACES = 64  # below this, worker processes (~2 s to import and load the model) do not pay
# How often the identity pass logs its progress (faces done, rate, time left); the test knob shared
# with the training's progress lines.
DEFAULT_PROGRESS_SECONDS = 30.0


def progress_interval() -> float:
    return float(os.environ.get(PROGRESS_INTERVAL_ENV, DEFAULT_PROGRESS_SECONDS))


def _quiet(line: str) -> None:
    del line


class Progress:
    """Logs "identity: D of N faces embedded, R faces/s, about T left" at most every ``interval`` s."""

    def __init__(self, total: int, log: Callable[[str], None], interval: float | None = None) -> None:
        self.total = total
        self.log = log
        self.interval = progress_interval() if interval is None else interval
        self.started = time.monotonic()
        self.last = self.started

    def line(self, done: int) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        rate = done / seconds
        left = f"about {_duration((self.total - done) / rate)} left" if done else "time left not known yet"
        return f"identity: {done} of {self.total} faces embedded, {rate:.1f} faces/s, {left}"

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval and done < self.total:
            self.last = now
            self.log(self.line(done))


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def embed_crops(
    model: IdentityModel,
    cache: EmbeddingCache,
    crops: Sequence[tuple[str, Box]],
    workers: int = 1,
    log: Callable[[str], None] = _quiet,
) -> list[Embedding | None]:
    """Embed (crop path, box) pairs; uncached ones in ``workers`` processes when there are many.

    dlib holds the GIL while it computes, so threads would not help: each worker is a fresh Python
    process (``python -m likeness.identity.workers``) that loads the model once, embeds its share into the
    cache and exits; the results are then read from the cache. None for an unreadable crop.
    One crop's bytes are held at a time (memory does not grow with the crops' size), and ``log`` gets
    a progress line at least every LIKENESS_PROGRESS_SECONDS (30 s) while faces are embedded.
    """
    keys: list[str | None] = []
    pending: list[tuple[str, Box]] = []
    pending_keys: list[str] = []
    for path, box in crops:
        try:
            key = cache.content_key(Path(path).read_bytes(), box)
        except OSError:
            keys.append(None)
            continue
        keys.append(key)
        if Embedding.from_json(cache.get(key), cache.dimension) is None:
            pending.append((path, box))
            pending_keys.append(key)
    progress = Progress(len(pending), log)
    if workers > 1 and len(pending) >= PARALLEL_MIN_FACES:
        _embed_in_workers(pending, pending_keys, cache, workers, progress)
        cache.computed += len(pending)
        cache.hits -= len(pending)  # read back from the cache below, but computed in this run
    results: list[Embedding | None] = []
    computed_before = cache.computed
    for (path, box), key in zip(crops, keys, strict=True):
        stored = None if key is None else Embedding.from_json(cache.get(key), cache.dimension)
        if stored is not None:
            cache.hits += 1
            results.append(stored)
            continue
        try:
            results.append(None if key is None else embed_crop(model, cache, Path(path).read_bytes(), box))
        except OSError:  # gone since it was read above
            results.append(None)
        progress.update(cache.computed - computed_before)
    return results


def _embed_in_workers(
    pending: Sequence[tuple[str, Box]],
    pending_keys: Sequence[str],
    cache: EmbeddingCache,
    workers: int,
    progress: Progress,
) -> None:
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
            command = [sys.executable, "-m", "likeness.identity.workers", str(jobs)]
            # stderr to a file, not a pipe: a worker that writes much must not block on a full pipe
            # while this process waits for it.
            errors = (Path(folder) / f"shard{index}.err").open("wb")
            processes.append((subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors), errors))
        # The workers write the cache; what of it is there says how far they got.
        running = [process for process, _ in processes]
        while running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                running[0].wait(timeout=min(max(progress.interval, 0.2), 5.0))
            running = [process for process in running if process.poll() is None]
            if running and time.monotonic() - progress.last >= progress.interval:
                progress.update(_count_done(cache, pending_keys))
        for process, errors in processes:
            errors.close()
            if process.returncode != 0:
                lines = Path(errors.name).read_text(errors="replace").strip().splitlines()
                if lines and lines[-1].startswith("MemoryError"):
                    raise MemoryError(lines[-1])  # the job's one line names the stage and the key
                raise LikenessError(f"identity worker failed: {lines[-1] if lines else process.returncode}")


def _count_done(cache: EmbeddingCache, keys: Sequence[str]) -> int:
    """How many of ``keys`` the cache holds now (one stat a key, once an interval)."""
    return sum(1 for key in keys if (cache.folder / f"{key}.json").exists())


def _worker(jobs_path: str) -> None:
    """One worker process: embed the crops listed in ``jobs_path`` into the cache."""
    jobs = json.loads(Path(jobs_path).read_text())
    model = load_model()
    cache = EmbeddingCache(jobs["cache"], model)
    for path, box in jobs["crops"]:
        embed_crop(model, cache, Path(path).read_bytes(), tuple(box))  # type: ignore[arg-type]


if __name__ == "__main__":
    _worker(sys.argv[1])
