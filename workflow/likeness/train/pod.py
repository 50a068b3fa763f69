"""pod.sh's Python side: the pod.yaml check, the archive that goes home and pod.sh's last line.

On a rented GPU machine pod.sh runs the GPU stage of an unpacked bundle (likeness.train.bundle): the
training, the headshots of every epoch and the choice of the best one. What the home workflow needs back
is packed into ``home.tar.gz`` beside pod.sh, with paths relative to the workflow's folder, so that one
``tar`` line unpacks it at home. The last line pod.sh prints says what helps: resume only when running
it again can resume, otherwise the fix.

    python -m likeness.train.pod check pod.yaml        one line naming a key that is not this machine's
    python -m likeness.train.pod finish CODE STARTED   pack home.tar.gz (when done); print the last line
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from likeness.errors import ConfigError, LikenessError
from likeness.sdscripts.states import find_resume_state
from likeness.summary import SNAKEMAKE
from likeness.train import status as st
from likeness.train.best_epoch import lora_stem
from likeness.train.bundle import MARKER
from likeness.train.runplan import RUNTIME_KEYS, RunPlan

HOME_ARCHIVE = "home.tar.gz"
AGAIN = "run `bash pod.sh` again"
# What the user runs at home once the archive is unpacked: the home machine's command is not known here (this
# is the rented machine), so the setup's own snakemake, which takes the copied-back files up from there.
HOME_COMMAND = f"{SNAKEMAKE} --cores 2"
# What each stage's status file is on the pod (the Snakefile's names).
TRAIN_STATUS = Path("results/train/status.json")
HEADSHOTS_STATUS = Path("results/headshots/status.json")
HEADSHOT_GRID = Path("results/report/headshots.png")
LORA_DIR = Path("results/lora")


def check_pod_config(data: Any, source: str = "pod.yaml") -> None:
    """pod.yaml may set only machine-local train keys (likeness.train.runplan.RUNTIME_KEYS): every other key
    shapes the LoRA, so it would train another run id than the one at home. ConfigError names the first."""
    if data is None:
        return
    if not isinstance(data, Mapping):
        raise LikenessError(f"{source}: expected a mapping with a train: section, got {type(data).__name__}")
    allowed = ", ".join(f"train.{key}" for key in RUNTIME_KEYS)
    why = f"{source} may not set it: it would change the run id (set it at home and bundle again); {source} takes"
    for section, values in data.items():
        if section != "train":
            raise ConfigError(str(section), f"{why} only {allowed}")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError("train", f"{source}: expected a mapping of keys, got {type(values).__name__}")
        for key in values:
            if key not in RUNTIME_KEYS:
                raise ConfigError(f"train.{key}", f"{why} only {allowed}")


def load_pod_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """pod.yaml read and checked (check_pod_config); a YAML error is one line too."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise LikenessError(f"{path}: cannot read it ({' '.join(str(error).split())})") from None
    check_pod_config(data, str(path))
    return data or {}


@dataclass(frozen=True)
class PodState:
    """What the pod's run left: the bundle's run, each stage's record (None where absent)."""

    run_id: str
    run_dir: str
    run_status: dict[str, Any] | None  # results/train/<run_id>/status.json, written by every train job
    train: dict[str, Any] | None
    headshots: dict[str, Any] | None
    lora: dict[str, Any] | None

    @classmethod
    def read(cls, workdir: Path, trigger: str) -> PodState:
        marker = st.require_record(workdir / MARKER)
        run_dir = str(marker["run_dir"])
        return cls(
            run_id=str(marker["run_id"]),
            run_dir=run_dir,
            run_status=st.read_record(workdir / run_dir / "status.json"),
            train=st.read_record(workdir / TRAIN_STATUS),
            headshots=st.read_record(workdir / HEADSHOTS_STATUS),
            lora=st.read_record(workdir / LORA_DIR / f"{lora_stem(trigger)}.json"),
        )


def _updated_since(record: Mapping[str, Any] | None, started: float) -> bool:
    """Whether a run status was written by this pod.sh (its "updated" time, whole seconds, after the start)."""
    try:
        return datetime.fromisoformat(str((record or {})["updated"])).timestamp() >= int(started)
    except (KeyError, ValueError):
        return False


def _resume_note(workdir: Path, run_dir: str) -> str:
    try:
        plan = RunPlan.load(workdir / run_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    latest = find_resume_state(str(workdir / plan.output_dir), plan.output_name)
    return f" from epoch {latest[1] + 1}" if latest else " from the start (no complete epoch yet)"


def last_line(state: PodState, code: int, started: float, workdir: Path) -> tuple[str, int]:
    """pod.sh's last line and exit code: the copy-back on success; otherwise the fix, and "again" only where
    running again resumes or retries something that can work on a second try."""
    run = state.run_status if _updated_since(state.run_status, started) else None
    if code == 0 and state.lora and state.lora.get("state") == "done":
        return (f"pod.sh: done: epoch {state.lora.get('epoch')} chosen; {HOME_ARCHIVE} holds what goes home", 0)
    code = code or 1
    if run is None:
        return (
            f"pod.sh: Snakemake stopped before the training ran (exit code {code}): the error above says why;"
            f" fix it, then {AGAIN}",
            code,
        )
    run_state = run.get("state")
    if run_state == "ready":
        missing = "; ".join(run.get("missing") or [])
        return (
            f"pod.sh: the training cannot start here: {missing}; fix that (pod.yaml sets train.sd_scripts,"
            f" train.launcher, train.python for this machine), then {AGAIN}",
            code,
        )
    if run_state in ("refused", "unavailable"):
        return (f"pod.sh: the training cannot run: {run.get('reason')} (running again cannot help)", code)
    if run_state in ("failed", "interrupted", "running"):
        return (
            f"pod.sh: the training stopped (exit code {run.get('exit_code', code)}; see logs/train.log);"
            f" {AGAIN} to resume{_resume_note(workdir, state.run_dir)}",
            code,
        )
    shots = state.headshots or {}
    if run_state == "done" and shots.get("state") == "refused":
        return (f"pod.sh: the training is done, the headshots cannot run: {shots.get('reason')}", code)
    if run_state == "done" and shots.get("state") == "ready":
        missing = "; ".join(shots.get("missing") or [])
        return (
            f"pod.sh: the training is done, the headshots cannot render here: {missing}; fix that, then {AGAIN}",
            code,
        )
    if run_state == "done" and shots.get("state") == "failed":
        return (
            f"pod.sh: the training is done; the headshots of epoch {shots.get('epoch')} failed (see"
            f" logs/headshots.log); {AGAIN} to render the epochs still missing",
            code,
        )
    return (
        f"pod.sh: the training is done, choosing the epoch failed (exit code {code}; see logs/best_lora.log"
        f" and the error above); fix it, then {AGAIN} (nothing is trained twice)",
        code,
    )


def _walk(workdir: Path, relative: Path, skip: Sequence[str] = ()) -> Iterator[Path]:
    path = workdir / relative
    if path.is_file():
        yield relative
    elif path.is_dir():
        for entry in sorted(path.iterdir()):
            if not entry.is_symlink() and not entry.name.endswith(tuple(skip)):
                yield from _walk(workdir, relative / entry.name, skip)


def home_members(workdir: Path, state: PodState, trigger: str) -> list[Path]:
    """What goes home, relative to the workflow's folder: the run's output/ (every epoch's LoRA, samples,
    TensorBoard events, the measured speed and the log; not the resume states, which only a resume here
    needs), the headshots of every epoch, results/lora/<trigger>.* and the headshot grid."""
    run_output = Path(state.run_dir) / "output"
    stem = lora_stem(trigger)
    parts = [
        *_walk(workdir, run_output, skip=("-state", ".tmp")),
        *_walk(workdir, Path("results/headshots") / state.run_id, skip=(".partial", ".tmp")),
        *(LORA_DIR / f"{stem}{suffix}" for suffix in (".safetensors", ".json")),
        HEADSHOT_GRID,
    ]
    return [p for p in parts if (workdir / p).is_file()]


def write_home_archive(workdir: Path, state: PodState, trigger: str) -> Path:
    """``home.tar.gz`` beside pod.sh, written under a temporary name and renamed."""
    target = workdir / HOME_ARCHIVE
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, mode="w:gz") as tar:
            for member in home_members(workdir, state, trigger):
                tar.add(workdir / member, arcname=str(member), recursive=False)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def copy_back_command(workdir: Path) -> str:
    """The one line a user runs at home, in the workflow's folder (README: "On a rented GPU machine")."""
    return f"ssh <this machine> cat {workdir.resolve() / HOME_ARCHIVE} | tar xzf -"


def finish(workdir: Path, code: int, started: float, trigger: str) -> tuple[list[str], int]:
    """The lines pod.sh ends with (the last one says what helps) and its exit code."""
    state = PodState.read(workdir, trigger)
    line, exit_code = last_line(state, code, started, workdir)
    if exit_code:
        return [line], exit_code
    archive = write_home_archive(workdir, state, trigger)
    size = archive.stat().st_size / 1e6
    return [
        f"pod.sh: {archive} ({size:.1f} MB): the run's LoRA files, headshots, results/lora/ and the grid",
        f"{line}; at home, in the workflow's folder: `{copy_back_command(workdir)}`, then `{HOME_COMMAND}`",
    ], 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m likeness.train.pod", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="refuse a pod.yaml key that is not this machine's")
    check.add_argument("pod_yaml")
    done = commands.add_parser("finish", help="pack home.tar.gz when done; print pod.sh's last line")
    done.add_argument("code", type=int)
    done.add_argument("started", type=float, help="pod.sh's start (seconds since the epoch)")
    args = parser.parse_args(argv)
    workdir = Path.cwd()
    if args.command == "check":
        try:
            load_pod_config(args.pod_yaml)
        except LikenessError as error:
            print(f"pod.sh: {error}", file=sys.stderr)
            return 2
        return 0
    config = yaml.safe_load((workdir / "config.yaml").read_text(encoding="utf-8")) or {}
    lines, code = finish(workdir, args.code, args.started, str(config.get("trigger", "")))
    for line in lines:
        print(line, file=sys.stdout if code == 0 else sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
