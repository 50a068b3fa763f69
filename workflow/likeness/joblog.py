"""The one logging idiom of every job: progress lines go to the rule's declared log and the console.

A rule calls its stage's job through :func:`run_logged` (``run:`` jobs) or :func:`run_script`
(``script:`` jobs, separate processes so that signals reach a trainer). The job takes ``log``, a
:class:`JobLog`, and calls it with one line at a time. The log file is always written, even by a job
that has nothing to say (it then holds the job's last line, or is empty). A :class:`LikenessError`
becomes one line, in the log and as the job's error: never a traceback.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from likeness.errors import LikenessError

PREFIX = "likeness: "
# Seconds between a long job's progress lines (the training, the identity pass); tests set it low.
PROGRESS_INTERVAL_ENV = "LIKENESS_PROGRESS_SECONDS"
_CONSOLE_LOCK = threading.Lock()


class JobLog:
    """Writes each line to the job's log file (flushed) and, prefixed, to the console."""

    def __init__(self, handle: TextIO, echo: bool = True) -> None:
        self._handle = handle
        self._echo = echo

    @property
    def file(self) -> TextIO:
        """The open log file, for a subprocess whose output goes into the log as it comes (flush first)."""
        return self._handle

    def __call__(self, line: str) -> None:
        self._handle.write(f"{line}\n")
        self._handle.flush()
        if self._echo:
            # One write of the whole line: print() writes the text and its newline separately, and the
            # crop jobs of one Snakemake run in two threads, whose lines then ran together on the console.
            with _CONSOLE_LOCK:
                sys.stdout.write(f"{PREFIX}{line}\n")
                sys.stdout.flush()


def _open(log_path: str | os.PathLike[str]) -> TextIO:
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    return open(log_path, "w", encoding="utf-8")


# What lowers a stage's memory need, for the one line a job that ran out of memory ends with. The stage
# is read from the rule's log path (logs/<stage>_..., logs/<stage>/...).
MEMORY_HINTS = {
    "export": "select.taken_after (export fewer markers) or a machine with more memory",
    "crop": "crop.size (a smaller crop side)",
    "select": "--cores 1 (one identity worker process) or select.taken_after (fewer faces)",
    "caption": "caption.batch_size (fewer crops through the tagger at once)",
    "train": "train.batch_size (or train.gradient_checkpointing: true)",
    "headshots": "train.headshot_size (smaller headshots)",
    "best-epoch": "train.headshot_size (smaller headshots)",
    "report": "select.top_n (fewer faces on the sheets)",
    "bundle": "a machine with more memory",
    "install": "a machine with more memory",
}


def stage_of(log_path: str | os.PathLike[str]) -> str:
    """The stage a job belongs to, from its log path: logs/select_faces.log -> select (best_lora's:
    best-epoch)."""
    parts = Path(log_path).parts
    name = parts[parts.index("logs") + 1] if "logs" in parts[:-1] else Path(log_path).stem
    stage = name.split("_")[0].removesuffix(".log")
    return "best-epoch" if stage == "best" else stage


def out_of_memory_line(log_path: str | os.PathLike[str]) -> str:
    stage = stage_of(log_path)
    hint = MEMORY_HINTS.get(stage, "a machine with more memory")
    return f"the {stage} stage ran out of memory; to lower what it needs set {hint}"


def run_logged(log_path: str | os.PathLike[str], job: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``job(*args, **kwargs, log=JobLog)``; a LikenessError, or running out of memory, stops the
    job with one line (the latter names the stage and the key that lowers its need)."""
    from snakemake.exceptions import WorkflowError  # only jobs need it; the library imports without it

    with _open(log_path) as handle:
        try:
            return job(*args, **kwargs, log=JobLog(handle))
        except LikenessError as error:
            handle.write(f"error: {error}\n")
            raise WorkflowError(f"{PREFIX}{error}") from None
        except MemoryError:
            line = out_of_memory_line(log_path)
            handle.write(f"error: {line}\n")
            raise WorkflowError(f"{PREFIX}{line}") from None


def run_script(log_path: str | os.PathLike[str], job: Callable[..., int], *args: Any, **kwargs: Any) -> int:
    """Like :func:`run_logged` for a ``script:`` job: returns the exit status (1 after one error line)."""
    with _open(log_path) as handle:
        try:
            return job(*args, **kwargs, log=JobLog(handle))
        except LikenessError as error:
            handle.write(f"error: {error}\n")
            print(f"{PREFIX}{error}", file=sys.stderr)
            return 1
        except MemoryError:
            line = out_of_memory_line(log_path)
            handle.write(f"error: {line}\n")
            print(f"{PREFIX}{line}", file=sys.stderr)
            return 1
