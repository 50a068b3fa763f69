"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Everything likeness writes goes through here, so that an interrupted run (Ctrl-C, SIGKILL, a preempted
machine) never leaves a truncated crop, manifest or caption that a later run would take as finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    """The process umask, read without changing it (os.umask would, briefly, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
# ".<target name>.<random or pid>.tmp": what a writer leaves behind when it is killed (SIGKILL, power
# loss) between creating its temporary file and renaming it over the target.
_TEMPORARY_SUFFIX = ".tmp"
_TEMPORARY_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TEMPORARY_SUFFIX, dir=target.parent)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_if_changed(path: str | os.PathLike[str], data: bytes) -> bool:
    """Write atomically unless the file already holds exactly ``data``; return whether it wrote.

    Leaving an unchanged file alone keeps its mtime, so Snakemake does not see it as new.
    """
    target = Path(path)
    try:
        if target.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write_bytes(target, data)
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete the temporary files that killed writers left anywhere under ``folder``; return how many.

    Call it only while no other process can be writing there: for results/, from Snakemake's onstart
    hook, which runs while the run holds the working directory's lock.
    """
    removed = 0
    root = Path(folder)
    if not root.is_dir():
        return 0
    for path in root.rglob(f".*{_TEMPORARY_SUFFIX}"):
        if _TEMPORARY_NAME.match(path.name) and path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed
