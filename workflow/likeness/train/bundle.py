"""A training bundle: everything a rented GPU machine needs to run the training stage, in one tarball.

``snakemake bundle`` writes ``results/train/<run_id>.tar.gz``: the workflow, the config in use, the export
(so that parsing needs no database), the dataset and its captions, the run folder with its configs, and
``pod.sh``. On the rented machine ``bash pod.sh`` sets the workflow up, trains (resuming after a restart),
renders the headshots, chooses the epoch and packs what goes home (likeness.train.pod). Unpacked in the
workflow's folder at home, the next run records the training as done, imports the measured speed and draws
every figure.

The bundle holds the person's photos: the selected face crops (``results/dataset/images``) and nothing else
of the library (no originals, no database, no password).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from likeness import WORKFLOW_DIR
from likeness.atomic import atomic_write_json
from likeness.errors import LikenessError

# Its presence at the top of a working folder tells the Snakefile to read results/export/ instead of the
# database (common.smk).
MARKER = "likeness-bundle.json"
POD_SCRIPT = WORKFLOW_DIR / "scripts" / "pod.sh"
# What a checkout holds that the workflow needs on the pod (setup.sh installs the package from it).
WORKFLOW_PARTS = ("Snakefile", "pyproject.toml", "README.md", "workflow", "profiles", "resources", "envs")
# Results the training stage reads, and what later stages at home do not need to see again.
RESULT_PARTS = (
    "results/export/markers.tsv",
    "results/export/neighbours.tsv",
    "results/dataset/manifest.tsv",
    "results/dataset/excluded.tsv",
    "results/dataset/images",
    "results/dataset/identity.json",  # the selected faces' centre, which best_lora scores headshots against
    "results/captions/captions.tsv",
    "results/captions/text",  # the <stem>.txt captions the train rule reads
    "results/captions/stats.json",
    "results/train/calibration.tsv",
)
SKIP_NAMES = {"__pycache__", ".snakemake", ".git", ".venv", "library"}
SKIP_SUFFIXES = (".pyc", ".so", ".tmp")


def is_bundle(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / MARKER).is_file()


def _walk(root: Path, relative: str) -> Iterator[tuple[Path, str]]:
    """(path on disk, name in the archive) for a file or every file below a folder, in a stable order."""
    path = root / relative
    if path.is_file():
        yield path, relative
        return
    if not path.is_dir():
        return
    for entry in sorted(path.iterdir()):
        if entry.name in SKIP_NAMES or entry.name.endswith(SKIP_SUFFIXES) or entry.is_symlink():
            continue
        yield from _walk(root, f"{relative}/{entry.name}")


def pod_config(config: Mapping[str, Any], run_dir: str, workdir: Path) -> dict[str, Any]:
    """The config in use, as plain data, for the bundle. Regularisation images point at the run folder's own
    copy of them (``<run>/reg``, which the bundle carries): the user's folder is not on the rented machine.
    The folder's name is not part of the run id, only the images' names and contents."""
    plain = json.loads(json.dumps(dict(config)))
    train = plain.get("train") or {}
    if train.get("reg_images") and (workdir / run_dir / "reg").is_dir():
        train["reg_images"] = f"{run_dir}/reg"
    return plain


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def bundle_members(workflow_dir: Path, workdir: Path, run_dir: str) -> list[tuple[Path, str]]:
    """Every file the bundle carries: the workflow (from its checkout), the results the training reads,
    and the run folder (configs, its own copy of the dataset, any output already there)."""
    members: list[tuple[Path, str]] = []
    for part in WORKFLOW_PARTS:
        members += _walk(workflow_dir, part)
    for part in (*RESULT_PARTS, run_dir):
        members += _walk(workdir, part)
    return members


def write_bundle(
    config: Mapping[str, Any],
    status_path: str | os.PathLike[str],
    workflow_dir: str | os.PathLike[str],
    record_path: str | os.PathLike[str],
    *,
    workdir: str | os.PathLike[str] = ".",
    log: Any = print,
) -> Path:
    """Write ``results/train/<run_id>.tar.gz`` for the run status.json names; returns its path.

    The config goes in as it is in use (it never holds a password: the source URL with one is refused and
    the password comes from the environment, which the pod does not need). ``record_path`` (the rule's
    output) lists what went in.
    """
    workdir, workflow_dir = Path(workdir), Path(workflow_dir)
    try:
        status = json.loads(Path(status_path).read_text(encoding="utf-8"))
        run_id, run_dir = str(status["run_id"]), str(status["run_dir"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LikenessError(f"{status_path} names no training run ({error})") from None
    if not (workdir / run_dir / "plan.json").is_file():
        raise LikenessError(f"{run_dir}/plan.json is missing: run the workflow first, it prepares the run folder")
    members = bundle_members(workflow_dir, workdir, run_dir)
    marker = {
        "run_id": run_id,
        "run_dir": run_dir,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": "a likeness training bundle: the Snakefile reads results/export/ here, not the database",
    }
    target = workdir / "results" / "train" / f"{run_id}.tar.gz"
    # Written beside the target under a temporary name and renamed: a killed run leaves no half bundle
    # (and onstart removes the temporary file).
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, mode="w:gz") as tar:
            for path, name in members:
                tar.add(path, arcname=f"{run_id}/{name}", recursive=False)
            config_text = yaml.safe_dump(pod_config(config, run_dir, workdir), allow_unicode=True)
            _add_bytes(tar, f"{run_id}/config.yaml", config_text.encode())
            _add_bytes(tar, f"{run_id}/{MARKER}", (json.dumps(marker, indent=2) + "\n").encode())
            _add_bytes(tar, f"{run_id}/pod.sh", POD_SCRIPT.read_bytes(), mode=0o755)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    files = len(members) + 3
    atomic_write_json(record_path, {**marker, "bundle": str(target), "files": files})
    log(
        f"bundle {target} ({target.stat().st_size / 1e6:.1f} MB, {files} files; it holds the person's face "
        f"crops): on the GPU machine run `tar xzf {target.name} && bash {run_id}/pod.sh`; its last line says how "
        "to bring the result home"
    )
    return target
