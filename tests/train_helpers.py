"""Helpers for the training tests: tiny datasets, configs that drive the sd-scripts test double."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DOUBLES = REPO_ROOT / "tests" / "doubles"
TRIGGER = "ohwx"
CLASS_WORD = "woman"


def make_images(folder: Path, count: int, size: int = 256, *, captions: bool = True, seed: int = 0) -> list[Path]:
    """``count`` square JPEG crops, captioned "<trigger>, <class word>, tags" as the caption stage writes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"face{seed:02d}{i:03d}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        if captions:
            path.with_suffix(".txt").write_text(f"{TRIGGER}, {CLASS_WORD}, smile, short hair\n")
        paths.append(path)
    return paths


def double_config(tmp: Path, **overrides: Any) -> dict[str, Any]:
    """A ``train`` section that runs the test double with this interpreter, on the "CPU" table row."""
    base_model = tmp / "base_model.safetensors"
    base_model.write_bytes(b"not a real model: the test double never reads it")
    cfg: dict[str, Any] = {
        "sd_scripts": str(DOUBLES),
        "launcher": "",
        "python": sys.executable,
        "base_model": str(base_model),
        "gpu": "CPU",
        "gpu_hourly_cost": 0.5,
        "max_gpu_hours": 0.0,
        "resolution": 256,
        "batch_size": 1,
        "num_repeats": 1,
        "max_train_epochs": 3,
        "network_dim": 4,
        "network_alpha": 1.0,
        "optimizer_type": "AdamW",
        "mixed_precision": "no",
        "sample_every_n_epochs": 1,
        "sample_prompts": ["{trigger} {class_word}, headshot"],
        "output_name": "face",
        # No headshots unless a test asks for them: their rendering is priced into the estimate.
        "headshot_prompts": [],
    }
    cfg.update(overrides)
    return cfg


def double_env(step_seconds: float = 0.0, save_seconds: float = 0.0) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "LIKENESS_ALLOW_NO_GPU": "1",
            "LIKENESS_DOUBLE_STEP_SECONDS": str(step_seconds),
            "LIKENESS_DOUBLE_SAVE_SECONDS": str(save_seconds),
            "LIKENESS_PROGRESS_SECONDS": "0",
            "PYTHONPATH": str(REPO_ROOT / "workflow"),
        }
    )
    return env


def start_stage(tmp: Path, cfg: dict[str, Any], dataset: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``python -m likeness.train.launch`` in its own process group (so a test can SIGKILL all of it)."""
    config_file = tmp / "config.yaml"
    config_file.write_text(yaml.safe_dump({"train": cfg}))
    command = [
        sys.executable, "-m", "likeness.train.launch", "--configfile", str(config_file),
        "--dataset", str(dataset), "--trigger", TRIGGER, "--class-word", CLASS_WORD,
        "--log", str(tmp / "logs" / "train.log"), "--status", str(tmp / "results" / "train" / "status.json"),
        "--runs-root", str(tmp / "results" / "train"),
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill_group(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def only_run_dir(runs_root: Path) -> Path:
    runs = [p for p in runs_root.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def load_double() -> ModuleType:
    """Import the test double as a module (to reuse its state writer for hand-made states)."""
    spec = importlib.util.spec_from_file_location("sdxl_train_network_double", DOUBLES / "sdxl_train_network.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
