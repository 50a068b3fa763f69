"""Run the real workflow through the snakemake CLI on a temporary copy, as snakemake-wrappers' tests do."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from conftest import REPO_ROOT

# What a user's checkout holds that the workflow needs (the demo library is not copied).
WORKFLOW_PARTS = ["Snakefile", "workflow", "profiles", "resources", "envs", "pyproject.toml", "README.md"]
# Selection settings that keep every drawn face, so every stage has the whole library to work on.
KEEP_ALL = {
    "min_crop_side": 64,
    "min_sharpness": 0,
    "max_other_face_share": 1.0,
    "duplicate_distance": 0,
    "duplicate_identity_distance": 0,
    "brightness_min": 0,
    "brightness_max": 255,
    "max_clipped_share": 1.0,
    "max_per_day": 0,
    "top_n": 100000,
    # Drawn faces are not people: the identity check (tested on real portraits) is off.
    "max_identity_distance": None,
}
_IGNORE = shutil.ignore_patterns("__pycache__", "library", "*.pyc")


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        source = REPO_ROOT / part
        if source.is_dir():
            shutil.copytree(source, dest / part, ignore=_IGNORE)
        else:
            shutil.copy2(source, dest / part)
    return dest


def write_config(workdir: Path, library_root: Path, person: str = "Zoë O'Brien", **sections: Any) -> dict:
    config: dict[str, Any] = {
        "person": person,
        "source": {
            "url": f"sqlite:///{library_root / 'storage' / 'index.db'}",
            "originals": str(library_root / "originals"),
            "sidecar": str(library_root / "storage" / "sidecar"),
        },
        "crop": {"size": 256},
        # The tests' drawn photos are small: keep every readable face in the training set.
        "select": dict(KEEP_ALL),
        # The offline stand-in tagger, with its caches inside the test's folder.
        "caption": {"standin": True, "cache_dir": str(workdir / "cache" / "captions")},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    return config


def snakemake_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment plus ``extra``, with this interpreter's bin folder (snakemake, python) first on PATH."""
    env = {**os.environ, **(extra or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` in ``workdir`` with this interpreter's snakemake; the profile applies."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=snakemake_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        command = " ".join(args)
        raise AssertionError(f"snakemake {command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


_JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$", re.MULTILINE)
_WILDCARDS = re.compile(r"^\s+wildcards: (.*)$", re.MULTILINE)


def planned_jobs(workdir: Path, *args: str) -> dict[str, list[str]]:
    """The jobs a dry run would execute: rule name -> list of wildcard strings (one per job)."""
    result = snakemake(workdir, "-n", *args)
    text = result.stdout + result.stderr
    jobs: dict[str, list[str]] = defaultdict(list)
    headers = list(_JOB_HEADER.finditer(text))
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        block = text[header.end() : end]
        wildcards = _WILDCARDS.search(block)
        jobs[header.group(1)].append(wildcards.group(1) if wildcards else "")
    if "Nothing to be done" in text:
        assert not jobs, text
    return dict(jobs)


def uids_of(jobs: dict[str, list[str]], rule: str) -> set[str]:
    return {w.removeprefix("stem=") for w in jobs.get(rule, [])}
