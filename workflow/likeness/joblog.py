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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from likeness.errors import LikenessError

PREFIX = "likeness: "
# Seconds between a long job's progress lines (the training, the identity pass); tests set it low.
PROGRESS_INTERVAL_ENV = "LIKENESS_PROGRESS_SECONDS"


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
            print(f"{PREFIX}{line}", flush=True)


def _open(log_path: str | os.PathLike[str]) -> TextIO:
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    return open(log_path, "w", encoding="utf-8")


def run_logged(log_path: str | os.PathLike[str], job: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``job(*args, **kwargs, log=JobLog)``; a LikenessError stops the job with one line."""
    from snakemake.exceptions import WorkflowError  # only jobs need it; the library imports without it

    with _open(log_path) as handle:
        try:
            return job(*args, **kwargs, log=JobLog(handle))
        except LikenessError as error:
            handle.write(f"error: {error}\n")
            raise WorkflowError(f"{PREFIX}{error}") from None


def run_script(log_path: str | os.PathLike[str], job: Callable[..., int], *args: Any, **kwargs: Any) -> int:
    """Like :func:`run_logged` for a ``script:`` job: returns the exit status (1 after one error line)."""
    with _open(log_path) as handle:
        try:
            return job(*args, **kwargs, log=JobLog(handle))
        except LikenessError as error:
            handle.write(f"error: {error}\n")
            print(f"{PREFIX}{error}", file=sys.stderr)
            return 1
