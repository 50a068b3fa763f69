"""WD14 tagger through ONNX Runtime: find the model, load it once, turn face crops into tag probabilities.

Preprocessing follows sd-scripts' ``finetune/tag_images_by_wd14_tagger.py`` (v0.10.1) rule by rule, so
that a model behaves here as it does there: transparency composited on white, RGB to BGR, centred white
padding to a square, then area resizing when the square is at least the model's input size (the usual
case for face crops) and Pillow-style Lanczos when it must be enlarged, float32 in 0..255, NHWC. Pillow
is not a dependency, so its 8-bit Lanczos resampler is reproduced here (fixed-point, two passes).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from likeness.atomic import atomic_write_json
from likeness.errors import ConfigError, LikenessError

Log = Callable[[str], None]

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
RATING_CATEGORY = 9
GENERAL_CATEGORY = 0
CHARACTER_CATEGORY = 4
DEFAULT_INPUT_SIZE = 448
# Part of every cache key: bump it when preprocessing changes, so stored probabilities are recomputed.
PREPROCESS_VERSION = "sd-scripts-v0.10.1-wd14"
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
OFFLINE_HINT = (
    "set config key 'caption.model_dir' to a folder with model.onnx and selected_tags.csv, or run once with network"
)


# --------------------------------------------------------------------------------------- tag table


@dataclass(frozen=True)
class TagTable:
    """The rows of ``selected_tags.csv`` in model output order."""

    names: tuple[str, ...]
    categories: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.names)


def read_tag_table(path: str | os.PathLike[str]) -> TagTable:
    """Read a WD14 ``selected_tags.csv`` (columns tag_id,name,category,count)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise LikenessError(f"cannot read tag list {path}: {exc.strerror or exc}") from exc
    if not rows or [cell.strip() for cell in rows[0][:3]] != ["tag_id", "name", "category"]:
        raise LikenessError(f"{path} is not a WD14 selected_tags.csv (expected header tag_id,name,category,...)")
    names: list[str] = []
    categories: list[int] = []
    for line_number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            names.append(row[1])
            categories.append(int(row[2]))
        except (IndexError, ValueError):
            raise LikenessError(f"{path} line {line_number}: expected tag_id,name,category,count") from None
    return TagTable(tuple(names), tuple(categories))


# ---------------------------------------------------------------------------------- preprocessing


def decode_image(data: bytes) -> np.ndarray | None:
    """Decode image bytes as stored (no EXIF rotation, alpha kept), like Pillow's ``Image.open``."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        return None
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return None
    return image


def _to_8bit(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def _div255_rounded(values: np.ndarray) -> np.ndarray:
    """Integer division by 255 rounded to nearest, as Pillow blends with a mask."""
    shifted = values + 128
    return ((shifted >> 8) + shifted) >> 8


def composite_on_white_bgr(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, gray+alpha, BGR, BGRA) as 8-bit BGR with transparency on white."""
    image = _to_8bit(image)
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels in (2, 4):
        colour = image[:, :, :-1].astype(np.int32)
        alpha = image[:, :, -1:].astype(np.int32)
        blended = _div255_rounded(colour * alpha + 255 * (255 - alpha)).astype(np.uint8)
        image = blended
        channels -= 1
    if channels == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels != 3:
        raise ValueError(f"unsupported number of channels: {channels}")
    return np.ascontiguousarray(image)


def pad_to_square_white(image: np.ndarray) -> np.ndarray:
    """Centre the image on a white square; an odd remainder goes to the right/bottom."""
    height, width = image.shape[:2]
    size = max(height, width)
    pad_x, pad_y = size - width, size - height
    left, top = pad_x // 2, pad_y // 2
    return np.pad(image, ((top, pad_y - top), (left, pad_x - left), (0, 0)), mode="constant", constant_values=255)


_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit resampling


def _lanczos3(x: np.ndarray) -> np.ndarray:
    inside = (x >= -3.0) & (x < 3.0)
    return np.where(inside, np.sinc(x) * np.sinc(x / 3.0), 0.0)


def _pil_fixed_point_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel, the source indices and fixed-point weights of Pillow's Lanczos filter."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 3.0 * filter_scale
    taps = math.ceil(support) * 2 + 1
    indices = np.zeros((out_size, taps), dtype=np.int64)
    weights = np.zeros((out_size, taps), dtype=np.int64)
    for out_x in range(out_size):
        centre = (out_x + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        count = min(int(centre + support + 0.5), in_size) - first
        offsets = np.arange(count)
        kernel = _lanczos3((offsets + first - centre + 0.5) / filter_scale)
        total = kernel.sum()
        if total != 0.0:
            kernel = kernel / total
        scaled = kernel * (1 << _PRECISION_BITS)
        weights[out_x, :count] = np.where(kernel < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5))
        indices[out_x, :count] = offsets + first
    return indices, weights


def _pil_resample_axis(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    indices, weights = _pil_fixed_point_taps(image.shape[axis], out_size)
    source = np.moveaxis(image, axis, 0).astype(np.int64)
    accumulator = np.full((out_size, *source.shape[1:]), 1 << (_PRECISION_BITS - 1), dtype=np.int64)
    extra_dims = (1,) * (source.ndim - 1)
    for tap in range(indices.shape[1]):
        accumulator += source[indices[:, tap]] * weights[:, tap].reshape(out_size, *extra_dims)
    result = np.clip(accumulator >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(result, 0, axis)


def pil_lanczos_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an 8-bit HxWxC image to size x size as Pillow's ``resize(..., LANCZOS)`` does."""
    horizontal = _pil_resample_axis(image, size, axis=1) if image.shape[1] != size else image
    return _pil_resample_axis(horizontal, size, axis=0) if image.shape[0] != size else horizontal


def preprocess(image: np.ndarray, input_size: int = DEFAULT_INPUT_SIZE) -> np.ndarray:
    """One decoded image as the tagger's HxWx3 float32 BGR input in 0..255."""
    square = pad_to_square_white(composite_on_white_bgr(image))
    if square.shape[0] >= input_size:
        resized = cv2.resize(square, (input_size, input_size), interpolation=cv2.INTER_AREA)
    else:
        resized = pil_lanczos_resize(square, input_size)
    return resized.astype(np.float32)


# ---------------------------------------------------------------------------------- model files


@dataclass(frozen=True)
class ModelFiles:
    onnx_path: Path
    tags_path: Path
    label: str  # for logs: "repo@revision", "folder ...", "offline stand-in"


def local_model_files(folder: str | os.PathLike[str], key: str = "caption.model_dir") -> ModelFiles:
    root = Path(folder)
    missing = [name for name in (MODEL_FILE, TAGS_FILE) if not (root / name).is_file()]
    if missing:
        raise ConfigError(key, f"folder '{root}' lacks {' and '.join(missing)}")
    return ModelFiles(root / MODEL_FILE, root / TAGS_FILE, f"folder {root}")


def hub_model_files(repo_id: str, revision: str | None, hub_cache: str | None, log: Log) -> ModelFiles:
    """The model's two files from the Hugging Face cache, downloading them on first use."""
    paths = {name: _hub_file(repo_id, revision, name, hub_cache, log) for name in (MODEL_FILE, TAGS_FILE)}
    label = f"{repo_id}@{revision[:10]}" if revision else repo_id
    return ModelFiles(Path(paths[MODEL_FILE]), Path(paths[TAGS_FILE]), label)


def _hub_file(repo_id: str, revision: str | None, filename: str, hub_cache: str | None, log: Log) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub_cache, local_files_only=True)
    except LocalEntryNotFoundError:
        pass  # not cached yet: download below
    except Exception as exc:  # a malformed repo id or revision, a broken cache
        raise ConfigError("caption.model", f"cannot use '{repo_id}': {_one_line(exc)}") from None
    if not _hub_resolvable():
        raise LikenessError(
            f"caption model '{repo_id}' is not cached and the hub cannot be reached (no DNS): {OFFLINE_HINT}"
        )
    log(f"caption: downloading {filename} of {repo_id} (first use) into the Hugging Face cache")
    try:
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub_cache)
    except RepositoryNotFoundError:
        raise ConfigError(
            "caption.model", f"'{repo_id}' is not a model repository on the hub (or it needs a login)"
        ) from None
    except RevisionNotFoundError:
        raise ConfigError("caption.revision", f"'{revision}' is not a revision of '{repo_id}'") from None
    except RemoteEntryNotFoundError:
        raise ConfigError("caption.model", f"'{repo_id}' has no {filename}: is it a WD14 tagger?") from None
    except Exception as exc:  # offline, DNS, proxy, timeouts, hub errors
        raise LikenessError(
            f"caption model '{repo_id}' is not cached and the hub cannot be reached "
            f"({type(exc).__name__}): {OFFLINE_HINT}"
        ) from None


def _hub_resolvable() -> bool:
    """False when the hub's host name does not resolve and no proxy is set: fail at once instead of
    after huggingface_hub's retries (about 25 s)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy")):
        return True  # offline mode fails fast by itself; a proxy resolves names for us
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def file_sha256(path: Path, memo_path: Path | None = None) -> str:
    """SHA-256 of a file, remembered by (path, size, mtime) so a 1 GB model is hashed once."""
    stat = path.stat()
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    memo: dict[str, dict[str, str]] = {}
    if memo_path is not None:
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}
        entry = memo.get(str(path.resolve()))
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    sha = digest.hexdigest()
    if memo_path is not None:
        memo[str(path.resolve())] = {"stamp": stamp, "sha256": sha}
        atomic_write_json(memo_path, memo)
    return sha


def model_key(files: ModelFiles, memo_path: Path | None = None) -> str:
    """Names the model's probabilities in the cache: its two files' contents and the preprocessing."""
    parts = [
        PREPROCESS_VERSION,
        file_sha256(files.onnx_path, memo_path),
        file_sha256(files.tags_path, memo_path),
    ]
    return "wd14-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------- inference


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
            raise LikenessError(f"cannot load tagger model {onnx_path}: {_one_line(exc)}") from None
        log(f"caption: CUDA session failed ({_one_line(exc)}); retrying on the CPU")
        try:
            session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=[CPU_PROVIDER])
        except Exception as cpu_exc:
            raise LikenessError(f"cannot load tagger model {onnx_path}: {_one_line(cpu_exc)}") from None
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
