"""What the console says last: the closing summary of a run and the training's state and price in a dry run.

The Snakefile prints these when the process exits (atexit), after everything Snakemake prints itself
(its "Complete log" and "Elapsed time" lines, a failed run's error text), so that they are the last
block on the screen. Every line starts with ``likeness:``; on failure the last lines are the failed jobs'
own one-line errors, read back from their logs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from likeness import tables
from likeness.errors import LikenessError
from likeness.joblog import PREFIX

# The environment variable the main process sets to invoked_command(), for the hints jobs print.
COMMAND_VARIABLE = "LIKENESS_COMMAND"


# Where workflow/scripts/setup.sh puts Snakemake (it is not on PATH): what a hint names when it cannot know
# the command of the run (a job started outside Snakemake, a test calling the package directly).
SNAKEMAKE = ".venv/bin/snakemake"


def hint_command(default: str) -> str:
    """The command a job's hint names: the one this run was started with, else ``default``."""
    return os.environ.get(COMMAND_VARIABLE) or default


def hint(target: str, cores: int = 2, env: Mapping[str, str] | None = None) -> str:
    """The command a hint tells the user to run for ``target``, as it can be typed again here: this run's
    own command (its profile and options kept, its targets replaced by ``target``), else
    ``.venv/bin/snakemake --cores <cores> <target>``. ``env``: the environment to read (default: this one)."""
    command = (os.environ if env is None else env).get(COMMAND_VARIABLE, "").strip()
    if not command:
        return shlex.join([SNAKEMAKE, "--cores", str(cores), target])
    # A dry run prints hints too (the estimate's notes): the command it names must do the work.
    words = [word for word in shlex.split(command) if word not in _DRY_RUN_FLAGS]
    return with_targets(shlex.join(words), target)


_DRY_RUN_FLAGS = {"-n", "--dry-run", "--dryrun", "--just-print"}


def invoked_command(argv: Sequence[str] | None = None, cwd: str | os.PathLike[str] | None = None) -> str:
    """The command line this run was started with, as the user can type it again here (profile and all):
    ``.venv/bin/snakemake --profile profiles/slurm``, not a bare ``snakemake`` that is not on PATH."""
    argv = list(sys.argv if argv is None else argv)
    program = argv[0] if argv else "snakemake"
    if Path(program).name == "__main__.py":  # python -m snakemake
        head = [_relative(sys.executable, cwd), "-m", "snakemake"]
    elif "/" in program:
        head = [_relative(program, cwd)]
    else:
        head = [program]
    return shlex.join([*head, *argv[1:]])


def _relative(path: str, cwd: str | os.PathLike[str] | None) -> str:
    """``path`` relative to ``cwd`` when it lies inside it (.venv/bin/snakemake), else as given."""
    try:
        inside = Path(os.path.abspath(path)).relative_to(Path(cwd or os.getcwd()).resolve())
    except ValueError:
        return path
    return str(inside)


def with_targets(command: str, *targets: str) -> str:
    """``command`` asking for ``targets`` instead of the targets it named, its options kept as typed.

    The targets come right after the program: after an option that takes any number of values (--config,
    --forcerun) argparse would read them as more of its values."""
    words = shlex.split(command)
    head = 3 if words[1:3] == ["-m", "snakemake"] else 1
    program, rest = words[:head], words[head:]
    kept: list[str] = []
    taking: int | None = 0  # values the last option still takes (None: any number, as --config)
    for word in rest:
        if word.startswith("-"):
            kept.append(word)
            name = word.split("=", 1)[0]
            taking = None if name in _OPTIONS_WITH_VALUES and "=" not in word else 0
            taking = 1 if name in _OPTIONS_WITH_ONE_VALUE and "=" not in word else taking
        elif taking is None or taking > 0:
            kept.append(word)
            taking = taking - 1 if taking else taking
    return shlex.join([*program, *targets, *kept])


# This workflow's options that take one value, and those that take several (everything up to the next option).
_OPTIONS_WITH_ONE_VALUE = {"--cores", "-c", "--jobs", "-j", "--profile", "--directory", "-d", "--report"}
# --forcerun and --until name rules, not targets: their values are kept with them (a hint that dropped them
# would turn `-R install_trainer` into a bare -R that swallows the hint's own target).
_OPTIONS_WITH_VALUES = {
    "--config",
    "-C",
    "--configfile",
    "--configfiles",
    "--set-resources",
    "--resources",
    "--forcerun",
    "-R",
    "--until",
    "-U",
    "--omit-from",
    "-O",
}


def _status(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def training_state(status_path: str | os.PathLike[str]) -> str:
    """One line: the training's state as status.json records it."""
    status = _status(status_path)
    if status is None:
        return "training: not prepared yet"
    state = status.get("state", "?")
    if state == "done":
        return f"training: done in {status.get('run_dir')}/ ({status.get('lora')})"
    if state == "ready":
        missing = "; ".join(status.get("missing") or []) or "nothing missing"
        return f"training: ready in {status.get('run_dir')}/, not started ({missing})"
    return f"training: {state} in {status.get('run_dir')}/"


def faces_line(manifest: str | os.PathLike[str], excluded: str | os.PathLike[str]) -> str:
    """One line: faces kept for training (those kept by masking counted) and the excluded ones by reason, in
    the select job's own words (tables.kept_line)."""
    try:
        kept = tables.read_table(manifest, ("image",))
    except LikenessError:
        return "faces: not selected yet"
    try:
        reasons = [(row["reason_key"], row["reason"]) for row in tables.read_table(excluded, ("reason_key", "reason"))]
    except LikenessError:
        reasons = []
    # A masked face's training image is the PNG that carries its mask (likeness.select.outputs.image_name).
    by_masking = sum(1 for row in kept if row["image"].endswith(".png"))
    line = tables.kept_line(len(kept), by_masking, len(kept) + len(reasons), tables.exclusion_parts(reasons))
    return f"faces: {line}"


def lora_line(best_lora_json: str | os.PathLike[str], status_path: str | os.PathLike[str]) -> str:
    best = _status(best_lora_json) or {}
    lora = best.get("lora") or best.get("path")
    if lora and Path(str(lora)).exists():
        return f"LoRA: {lora} (epoch {best.get('epoch')})"
    status = _status(status_path) or {}
    if status.get("lora"):
        return f"LoRA: {status['lora']} (the final epoch; the best epoch is not chosen yet)"
    return "LoRA: none yet"


def _last_line(path: str | os.PathLike[str]) -> str:
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1].removeprefix("error: ") if lines else ""


def job_errors(failed: Sequence[tuple[str, Sequence[str]]], since: float | None = None) -> list[str]:
    """One line per failed job: its rule and the last line of its log (a job's error is its last line,
    likeness.joblog), and the log's path. A log older than ``since`` (the run's start) is an earlier run's:
    a job refused before it ran (sbatch said no) wrote none, and the old line would tell a stale story."""
    lines = []
    for rule, logs in failed:
        current = [log for log in logs if since is None or _modified_since(log, since)]
        last = next((line for line in map(_last_line, current) if line), "")
        where = f" (log: {', '.join(logs)})" if logs else ""
        lines.append(f"{PREFIX}{rule} failed: {last or 'it wrote no log in this run: see the lines above'}{where}")
    return lines


def _modified_since(path: str | os.PathLike[str], since: float) -> bool:
    # A second's slack: file times come from the kernel's coarse clock, which can trail time.time().
    try:
        return Path(path).stat().st_mtime >= since - 1.0
    except OSError:
        return False


def closing_summary(
    *,
    outcome: str,
    command: str,
    manifest: str,
    excluded: str,
    status_path: str,
    best_lora_json: str,
    failed: Sequence[tuple[str, Sequence[str]]] = (),
    started_at: float | None = None,
) -> list[str]:
    """The last block of a run: faces, training, LoRA, what to run next; on failure, the errors last
    (from the logs written since ``started_at``)."""
    status = _status(status_path) or {}
    lines = [
        f"{PREFIX}---- summary ({'finished' if outcome == 'success' else 'FAILED'}) ----",
        PREFIX + faces_line(manifest, excluded),
        PREFIX + training_state(status_path),
        PREFIX + lora_line(best_lora_json, status_path),
    ]
    if outcome != "success":
        lines.append(f"{PREFIX}next: fix what the line below says, then run `{command}` again (it resumes)")
        lines += job_errors(failed, started_at) or [f"{PREFIX}a job failed: see the log named above"]
        return lines
    if status.get("state") == "ready":
        lines.append(f"{PREFIX}next: once that is fixed, `{command}` launches the training")
    else:
        lines.append(f"{PREFIX}next: `{with_targets(command)} --report report.html` builds the report")
    return lines


def dry_run_footer(status_path: str, estimate_lines: Sequence[str]) -> list[str]:
    """After a dry run's job list (also when nothing is to be done): the training's state and price, and
    whether the price is exact or an upper bound (the estimate's own note in parentheses)."""
    stripped = [line.strip() for line in estimate_lines]
    price = [line for line in stripped if line.startswith(("steps:", "time:"))]
    cost = next((line for line in stripped if line.startswith("cost:")), "")
    notes = [line for line in stripped if line.startswith(("(", "WARNING"))]
    header = stripped[0].rstrip(":") if stripped else "training estimate"
    return [
        PREFIX + training_state(status_path),
        f"{PREFIX}{header}: {cost}",
        *(f"{PREFIX}  {line}" for line in [*price, *notes]),
    ]


class PerJobQuiet(logging.Filter):
    """Drops the scheduler's per-job chatter from Snakemake's console handler (not from its log file under
    .snakemake/log/, which keeps everything): "Select jobs to execute...", "Execute N jobs..." and each
    job's "[time] Finished jobid" block, and the rule blocks of ``rules`` (the per-face jobs: 7 lines
    each). What stays per such job is Snakemake's progress line with counts ("12 of 33 steps (36%) done").
    Measured on Snakemake 9.27: these records are plain INFO messages, JOB_FINISHED and JOB_INFO events
    (with ``rule_name``) of the logger ``snakemake.logging``."""

    _SCHEDULING = re.compile(r"^(Select jobs to execute\.\.\.|Execute \d+ jobs\.\.\.)$")

    def __init__(self, rules: Iterable[str] = ()) -> None:
        super().__init__()
        self.rules = frozenset(rules)

    def filter(self, record: logging.LogRecord) -> bool:
        event = str(getattr(record, "event", "")).lower()
        if event.endswith("job_finished"):
            return False
        if event.endswith("job_info") and getattr(record, "rule_name", None) in self.rules:
            return False
        return not (isinstance(record.msg, str) and self._SCHEDULING.match(record.msg))


def quiet_per_job_lines(rules: Iterable[str] = (), logger_name: str = "snakemake.logging") -> int:
    """Add :class:`PerJobQuiet` (quieting the blocks of ``rules``) to the console handlers of Snakemake's
    logger; returns how many got it."""
    handlers = _console_handlers(logger_name)
    for handler in handlers:
        for old in [f for f in handler.filters if isinstance(f, PerJobQuiet)]:
            handler.removeFilter(old)
        handler.addFilter(PerJobQuiet(rules))
    return len(handlers)


# A job block lists at most this many files of a kind on the console; the log file keeps every one.
CONSOLE_FILES = 8


def shorten_files(files: Sequence[str], limit: int = CONSOLE_FILES) -> list[str]:
    """The first ``limit`` names and how many more there are."""
    if len(files) <= limit:
        return list(files)
    return [*files[:limit], f"... and {len(files) - limit:,} more"]


def shorten_reason(reason: str, limit: int = CONSOLE_FILES) -> str:
    """Snakemake's reason ("Missing output files: a, b; Input files updated by another job: c, d, ...") with
    each list of files cut to ``limit`` names and a count."""
    parts = []
    for part in reason.split("; "):
        label, colon, listed = part.partition(": ")
        names = listed.split(", ") if colon else []
        parts.append(f"{label}: {', '.join(shorten_files(names, limit))}" if len(names) > limit else part)
    return "; ".join(parts)


class ShortFileLists(logging.Formatter):
    """Snakemake's console formatter, with each job block's inputs, outputs, logs and reason cut to
    CONSOLE_FILES names: the jobs that read every face's record (crop_summary, select_faces,
    report_selection) would print each as one line of every record (600 kB at 20,000 faces). The record
    itself is not changed, so the log file under .snakemake/log/ keeps the whole lists."""

    def __init__(self, inner: logging.Formatter, limit: int = CONSOLE_FILES) -> None:
        super().__init__()
        self.inner = inner
        self.limit = limit

    def format(self, record: logging.LogRecord) -> str:
        if not str(getattr(record, "event", "")).lower().endswith("job_info"):
            return self.inner.format(record)
        short = logging.makeLogRecord(record.__dict__)
        for item in ("input", "output", "log"):
            files = getattr(record, item, None)
            if isinstance(files, (list, tuple)):
                setattr(short, item, shorten_files(files, self.limit))
        if isinstance(getattr(record, "reason", None), str):
            short.reason = shorten_reason(record.reason, self.limit)
        return self.inner.format(short)


def _console_handlers(logger_name: str) -> list[logging.Handler]:
    return [
        handler
        for handler in logging.getLogger(logger_name).handlers
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
    ]


def shorten_console_file_lists(logger_name: str = "snakemake.logging") -> int:
    """Wrap the formatter of each console handler of Snakemake's logger in :class:`ShortFileLists` (once);
    returns how many handlers it wrapped."""
    wrapped = 0
    for handler in _console_handlers(logger_name):
        if handler.formatter is not None and not isinstance(handler.formatter, ShortFileLists):
            handler.setFormatter(ShortFileLists(handler.formatter))
            wrapped += 1
    return wrapped
