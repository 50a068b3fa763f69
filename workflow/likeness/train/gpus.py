"""Which GPU the estimate prices: ``train.gpu`` by name, or ``auto`` (the default), the GPU nvidia-smi reports
on the training machine.

A reported name ("NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB") is matched to
the speed table's rows by its words (the longest row name whose words all appear in order wins, so "RTX
3090 Ti" beats "RTX 3090" and "L4" never matches "L40S"). A name with no row is never a stop: it is priced
as the class of its memory size (``resources/gpu_classes.tsv``: each class names the table row it borrows
its speed from and that row's published throughput), with a note in the estimate saying so.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from likeness import RESOURCES, tables
from likeness.summary import hint

GPU_CLASSES_TSV = RESOURCES / "gpu_classes.tsv"
AUTO = "auto"
# train.gpu: auto where no GPU can be seen (a dry run at home, a Slurm login node): the card most people
# rent for an SDXL LoRA, and the table's best-sourced row.
AUTO_ASSUMED_GPU = "RTX 4090"
_VENDOR_WORDS = {"nvidia", "geforce", "tesla", "quadro"}


@dataclass(frozen=True)
class DetectedGpu:
    name: str  # as nvidia-smi reports it
    memory_gb: float | None


@dataclass(frozen=True)
class GpuClass:
    min_vram_gb: float
    name: str  # e.g. "24 GB class"
    like: str  # the table row it borrows its seconds per step from
    throughput: str  # the published figure of that row's card, for the note
    source: str


@dataclass(frozen=True)
class ResolvedGpu:
    """The GPU the estimate prices: ``name`` is the table's row (or the reported name, for its measured
    rows), ``speed_of`` the row whose seconds per step it uses, ``note`` why (empty for a plain table row)."""

    name: str
    speed_of: str
    note: str = ""
    memory_gb: float | None = None

    @property
    def estimated_from_class(self) -> bool:
        return self.speed_of != self.name


def parse_gpu_query(text: str) -> list[DetectedGpu]:
    """``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits``: one "name, MiB" a line."""
    gpus = []
    for line in text.splitlines():
        name, _, memory = line.rpartition(",")
        if not name.strip():
            name, memory = line, ""
        try:
            memory_gb: float | None = round(float(memory.strip()) / 1024, 1)
        except ValueError:
            memory_gb = None
        if name.strip():
            gpus.append(DetectedGpu(name.strip(), memory_gb))
    return gpus


def query_gpus(env: Mapping[str, str] | None = None) -> list[DetectedGpu]:
    """The GPUs of this machine as nvidia-smi names them (empty without nvidia-smi or with none visible)."""
    env = os.environ if env is None else env
    if env.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return []
    command = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_gpu_query(result.stdout) if result.returncode == 0 else []


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w not in _VENDOR_WORDS]


def match_table_name(reported: str, known: Sequence[str]) -> str | None:
    """The table row a reported GPU name is (the longest row name whose words appear in it, in order)."""
    words = _words(reported)

    def appears(row: str) -> bool:
        wanted = _words(row)
        return bool(wanted) and any(words[i : i + len(wanted)] == wanted for i in range(len(words)))

    matches = [row for row in known if appears(row)]
    return max(matches, key=lambda row: (len(_words(row)), len(row)), default=None)


def memory_in_name(name: str) -> float | None:
    """The memory a GPU name states ("A100-SXM4-40GB", "H100 80GB HBM3"), in GB."""
    match = re.search(r"(\d+)\s*GB", name, re.I)
    return float(match.group(1)) if match else None


def load_classes(path: str | Path | None = None) -> list[GpuClass]:
    rows = tables.read_resource_table(path or GPU_CLASSES_TSV)
    classes = [GpuClass(float(r["min_vram_gb"]), r["class"], r["like"], r["throughput"], r["source"]) for r in rows]
    return sorted(classes, key=lambda c: c.min_vram_gb)


def class_for(memory_gb: float | None, classes: Sequence[GpuClass]) -> GpuClass:
    """The class of a card with this much memory; with the memory unknown, the class of 24 GB cards."""
    memory = 24.0 if memory_gb is None else memory_gb
    fitting = [c for c in classes if c.min_vram_gb <= memory]
    return fitting[-1] if fitting else classes[0]


def resolve(
    setting: str,
    known: Sequence[str],
    detected: Sequence[DetectedGpu] | None,
    *,
    classes: Sequence[GpuClass] | None = None,
) -> ResolvedGpu:
    """The GPU to price for ``train.gpu`` = ``setting``. ``detected``: the training machine's GPUs (None:
    they cannot be seen from here, e.g. a Slurm login node; the first one trains)."""
    note = ""
    if setting.strip().lower() == AUTO:
        if not detected:
            where = "no GPU visible here" if detected is not None else "the training machine's GPU is not visible here"
            return ResolvedGpu(
                AUTO_ASSUMED_GPU,
                AUTO_ASSUMED_GPU,
                f"train.gpu auto: {where}; priced as an {AUTO_ASSUMED_GPU} (set train.gpu to the GPU you will"
                f" train on, or run `{hint('calibrate', cores=1)}` there)",
            )
        reported, memory = detected[0].name, detected[0].memory_gb
        note = f"train.gpu auto: nvidia-smi reports {reported}"
    else:
        reported, memory = setting.strip(), None
    if memory is None:
        memory = memory_in_name(reported)
    row = reported if reported in known else match_table_name(reported, known)
    if row:
        return ResolvedGpu(row, row, f"{note} (table row {row})" if note else "", memory)
    gpu_class = class_for(memory, classes if classes is not None else load_classes())
    size = f"{memory:g} GB" if memory is not None else "memory unknown"
    name = re.sub(r"^(nvidia\s+)?(geforce\s+)?", "", reported, flags=re.I) or reported
    why = (
        f"{reported!r} has no row in resources/gpu_speeds.tsv ({size}): estimated as the {gpu_class.name},"
        f" with the speed of the {gpu_class.like} ({gpu_class.throughput}); add its row or run"
        f" `{hint('calibrate', cores=1)}` on it"
    )
    return ResolvedGpu(name, gpu_class.like, f"{note}; {why}" if note else f"train.gpu {why}", memory)
