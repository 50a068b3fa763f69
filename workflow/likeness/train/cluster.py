"""A training job submitted to a cluster (train.submit, profiles/slurm) that failed: what the login side says.

The job runs on a node; when it cannot train there (no GPU visible, no trainer, no base model) it exits
non-zero with its reason in logs/train.log (likeness.train.launch). When sbatch refuses the submission the
job never ran, and the reason is only in Snakemake's own log; logs/train.log is an earlier run's, which
Snakemake (show-failed-logs) would print as the refused job's, so it is set aside while the run lasts
(``LogAside``). Either way Snakemake removes the rule's results/train/status.json as a failed job's output.
The Snakefile's onerror (common.smk) puts the status back as it was when the run started
(``StatusSnapshot``) and prints the reason with what to do (``failure_lines``), on the console where
Snakemake was started.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from likeness.joblog import PREFIX, PROGRESS_INTERVAL_ENV

TRAIN_RULE = "train"
# What the plugin (2.8.0) logs for a refused sbatch call, and Slurm's words for memory it cannot give.
SBATCH_FAILED = re.compile(r"SLURM sbatch failed\. The error message was '(.*?)'\.?\s*$", re.MULTILINE | re.DOTALL)
MEMORY_REFUSAL = re.compile(r"memory specification|mem(ory)? .*(exceed|not available|too (large|much))", re.I)
# The lines of a training job's log that say why it stopped (likeness.train.launch).
REASON_LINE = re.compile(r"^(training cannot run on this node|training refused|training stopped|error:) ")
# The job's progress lines in its log (likeness.train.launch): "training: epoch 2/3, step 40/120, 1.02 s/step,
# ETA 00:42". Not anchored: sd-scripts' progress bar, copied into the same log, ends in a carriage return
# and no newline, so a progress line often starts in the middle of a line of the file.
PROGRESS_LINE = re.compile(r"training: epoch \S+, step \d+/\d+, [0-9.]+ s/step, ETA [^\s]+")
# How much of the log's end a progress check reads: sd-scripts' own output is copied into it too.
_LOG_TAIL_BYTES = 256 * 1024


@dataclass(frozen=True)
class StatusSnapshot:
    """The rule's status file as it was when the run started (None: there was none)."""

    path: Path
    data: bytes | None
    mtime_ns: int | None

    @classmethod
    def take(cls, path: str | os.PathLike[str]) -> StatusSnapshot:
        path = Path(path)
        try:
            return cls(path, path.read_bytes(), path.stat().st_mtime_ns)
        except OSError:
            return cls(path, None, None)

    def restore(self) -> bool:
        """Write the file back, with its old time (so nothing downstream looks stale), where a failed job's
        clean-up removed it; returns whether it did."""
        if self.data is None or self.path.exists():
            return False
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(self.data)
        os.utime(tmp, ns=(self.mtime_ns or 0, self.mtime_ns or 0))
        os.replace(tmp, self.path)
        return True


@dataclass(frozen=True)
class LogAside:
    """The train rule's log, moved aside while a run that submits the job lasts (onstart) and put back at its
    end unless a job wrote a new one (onsuccess, onerror): a refused submission then shows no log rather
    than an earlier run's. ``<log>.previous`` keeps the earlier log when a job wrote a new one."""

    path: Path

    @property
    def aside(self) -> Path:
        return self.path.with_name(f"{self.path.name}.previous")

    def set_aside(self) -> bool:
        if not self.path.is_file():
            return False
        os.replace(self.path, self.aside)
        return True

    def put_back(self) -> bool:
        # Snakemake leaves an empty log behind a refused submission; a job's own log is never empty.
        written = self.path.exists() and (not self.path.is_file() or self.path.stat().st_size > 0)
        if written or not self.aside.is_file():
            return False
        os.replace(self.aside, self.path)
        return True


def _rule_blocks(snakemake_log: str, rule: str) -> list[str]:
    """The text of each "Error in rule <rule>:" block of Snakemake's log."""
    parts = re.split(r"^(?=Error in rule \w+:)", snakemake_log, flags=re.MULTILINE)
    return [part for part in parts if part.startswith(f"Error in rule {rule}:")]


def _reason_lines(train_log: Path, since: float) -> list[str]:
    """The reason lines the job wrote in this run (a log older than ``since`` is an earlier run's)."""
    try:
        if train_log.stat().st_mtime < since:
            return []
        lines = train_log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if REASON_LINE.match(line)]


def failure_lines(snakemake_log: str, train_log: str | os.PathLike[str], since: float, mem_mb: int) -> list[str]:
    """What to print after a failed run whose training job was submitted: the sbatch refusal (with the key
    to set) or the job's own reason. Empty when the training job did not fail."""
    blocks = _rule_blocks(snakemake_log, TRAIN_RULE)
    if not blocks:
        return []
    refused = SBATCH_FAILED.search(blocks[-1])
    if refused:
        error = " ".join(refused.group(1).split())
        lines = [f"{PREFIX}the training job was not submitted: sbatch said {error!r}"]
        if MEMORY_REFUSAL.search(error):
            lines.append(
                f"{PREFIX}the job asked for train.mem_mb={mem_mb} MB: set train.mem_mb (config.yaml or"
                " profiles/slurm/cluster.yaml) to at most a GPU node's memory (`sinfo -o '%N %m'` lists it in MB)"
            )
        return lines
    reasons = _reason_lines(Path(train_log), since)
    if reasons:
        return [f"{PREFIX}the training job failed on its node: {line}" for line in reasons]
    return [f"{PREFIX}the training job failed on its node; its log: {train_log} and .snakemake/slurm_logs/rule_train/"]


def _read_logs(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None) -> str:
    """Snakemake's log file(s) (onerror's ``log``: a list of paths in Snakemake 9)."""
    if paths is None:
        return ""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    texts = []
    for path in paths:
        try:
            texts.append(Path(path).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    return "\n".join(texts)


def report_failure(
    snapshot: StatusSnapshot,
    snakemake_log: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
    train_log: str,
    since: float,
    mem_mb: int,
) -> list[str]:
    """The Snakefile's onerror for the training: restore the status and return the lines to print."""
    lines = failure_lines(_read_logs(snakemake_log), train_log, since, mem_mb)
    if snapshot.restore():
        lines.append(f"{PREFIX}{snapshot.path} is back as it was before this run (a failed job's output is removed)")
    return lines


def latest_progress(text: str) -> str | None:
    """The last progress line of a training log's text, or None."""
    found = PROGRESS_LINE.findall(text)
    return found[-1] if found else None


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - _LOG_TAIL_BYTES))
            return log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


class ProgressRelay:
    """A submitted training's progress on the console where Snakemake was started.

    Snakemake prints nothing between "submitted with SLURM jobid" and the job's end, which can be hours.
    The job writes its progress lines to the rule's log on the shared folder; this relay reads that log's
    end every ``interval`` seconds and prints its newest progress line when it is new.
    """

    def __init__(
        self,
        log_path: str | os.PathLike[str],
        interval: float | None = None,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.log_path = Path(log_path)
        wanted = float(os.environ.get(PROGRESS_INTERVAL_ENV, 60)) if interval is None else interval
        self.interval = max(wanted, 1.0)  # a read of the log's end a second at most (the tests ask for 0)
        self.emit = emit or (lambda line: print(line, file=sys.stderr, flush=True))
        self._shown: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> str | None:
        """The console line for the log's newest progress line, once; None when there is nothing new."""
        latest = latest_progress(_log_tail(self.log_path))
        if latest is None or latest == self._shown:
            return None
        self._shown = latest
        return f"{PREFIX}on the cluster: {latest.removeprefix('training: ')} (log: {self.log_path})"

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            line = self.poll()
            if line:
                self.emit(line)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="likeness-train-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
