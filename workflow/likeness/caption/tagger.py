"""The WD14 tagger at run time: one ONNX Runtime session per run, batches of images in, probabilities out.

The session runs on CUDA when ``caption.provider`` allows it and a GPU with its libraries is usable, on
the CPU otherwise; the log says which. Models whose graph fixes the batch size (v2 taggers: 1) get
their batch size; the others take ``caption.batch_size`` images per call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from likeness.caption.preprocess import DEFAULT_INPUT_SIZE
from likeness.errors import ConfigError, LikenessError, one_line

if TYPE_CHECKING:
    from likeness.hub import Log

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def choose_providers(preference: str, available: list[str]) -> list[str]:
    """Providers to ask ONNX Runtime for, best first; CPU always closes the list."""
    if preference == "cpu" or CUDA_PROVIDER not in available:
        if preference == "cuda":
            raise ConfigError("caption.provider", "'cuda' asked for, but this onnxruntime has no CUDA provider")
        return [CPU_PROVIDER]
    return [CUDA_PROVIDER, CPU_PROVIDER]


@dataclass
class LoadedTagger:
    session: object
    input_name: str
    input_size: int
    fixed_batch: int | None  # the model's batch size when its graph fixes one (v2 taggers: 1)
    n_outputs: int | None
    provider: str
    load_seconds: float

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities [n, tags] for a float32 NHWC batch; pads to a fixed batch size if needed."""
        count = batch.shape[0]
        if self.fixed_batch is not None and count != self.fixed_batch:
            if count > self.fixed_batch:
                parts = [self.predict(batch[i : i + self.fixed_batch]) for i in range(0, count, self.fixed_batch)]
                return np.concatenate(parts)
            padding = np.zeros((self.fixed_batch - count, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, padding])
        outputs = self.session.run(None, {self.input_name: batch})  # type: ignore[attr-defined]
        return np.asarray(outputs[0], dtype=np.float32)[:count]


def load_tagger(onnx_path: Path, preference: str, log: Log) -> LoadedTagger:
    """Create the ONNX Runtime session (once per run) and report which provider it runs on."""
    import onnxruntime as ort

    started = time.perf_counter()
    requested = choose_providers(preference, ort.get_available_providers())
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # ONNX Runtime prints a multi-line error when the CUDA libraries are missing; we say it in one line.
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=requested)
    except Exception as exc:
        if requested == [CPU_PROVIDER]:
            raise LikenessError(f"cannot load tagger model {onnx_path}: {one_line(exc)}") from None
        log(f"caption: CUDA session failed ({one_line(exc)}); retrying on the CPU")
        try:
            session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=[CPU_PROVIDER])
        except Exception as cpu_exc:
            raise LikenessError(f"cannot load tagger model {onnx_path}: {one_line(cpu_exc)}") from None
    finally:
        ort.set_default_logger_severity(2)
    active = session.get_providers()[0]
    if preference == "cuda" and active != CUDA_PROVIDER:
        raise ConfigError("caption.provider", "'cuda' asked for, but no usable GPU/CUDA runtime was found")
    if CUDA_PROVIDER in requested and active != CUDA_PROVIDER:
        log("caption: CUDA is not usable here (no GPU or CUDA/cuDNN libraries); using the CPU")
    model_input = session.get_inputs()[0]
    shape = list(model_input.shape)
    if len(shape) != 4 or shape[3] not in (3, "3"):
        raise LikenessError(f"{onnx_path}: expected an NHWC image input [N, H, W, 3], found {shape}")
    input_size = shape[1] if isinstance(shape[1], int) else DEFAULT_INPUT_SIZE
    fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    out_shape = session.get_outputs()[0].shape
    n_outputs = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
    seconds = time.perf_counter() - started
    batching = f"fixed batch {fixed_batch}" if fixed_batch else "dynamic batch"
    log(f"caption: tagger loaded in {seconds:.1f} s, provider {active}, input {input_size}px, {batching}")
    return LoadedTagger(session, model_input.name, input_size, fixed_batch, n_outputs, active, seconds)


class Progress:
    """Progress lines with done/total, rate and ETA, at most one every ``every`` seconds."""

    def __init__(self, total: int, log: Log, every: float = 5.0) -> None:
        self.total, self.log, self.every = total, log, every
        self.started = time.perf_counter()
        self.last = -math.inf
        self.done = 0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if self.done < self.total and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        self.log(f"caption: tagged {self.done}/{self.total} images, {rate:.1f} img/s, ETA {_duration(eta)}")


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
