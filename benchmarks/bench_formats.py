#!/usr/bin/env python3
"""Per-face cost of HEIC and RAW originals against a full decode of the same file by the library used.

    python benchmarks/bench_formats.py [--megapixels 12] [--repeats 5]

Writes one photo of the given size (4:3, a drawn face on a textured background) as a HEIC (pillow-heif,
irot and EXIF orientation 6, as an iPhone writes), as a DNG with a full-size JPEG preview (read from the
preview), as a DNG without one (demosaiced by LibRaw) and as a JPEG (orientation 6), then times, best of
``--repeats`` in this process:

- **face**: ``likeness.crop.cropping.crop_face`` for one face, as the crop rule runs it (header, decode in
  the manager's frame, cut, resize to 1024, measurements, JPEG encode, atomic writes);
- **full decode**: what that file costs the library alone: ``np.asarray(pillow_heif.open_heif(...))`` for the
  HEIC; ``rawpy`` open + ``extract_thumb`` + ``cv2.imdecode`` of the preview, or ``rawpy`` open +
  ``postprocess`` (likeness's settings) for the demosaic; ``cv2.imdecode`` of the whole JPEG.

The ratio face / full decode is printed (issue 17's target: at most 1.10 for HEIC and RAW). Nothing is
asserted about time (benchmarks/README.md records a run).
"""

from __future__ import annotations

import argparse
import functools
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "workflow"), str(REPO / "resources"), str(REPO / "tests")]

from fixtures.formats import encode_heic  # noqa: E402
from fixtures.rawfiles import encode_dng  # noqa: E402
from likeness.config import validate_config  # noqa: E402
from likeness.crop import decoders  # noqa: E402
from likeness.crop.cropping import crop_face  # noqa: E402
from synthlib.drawing import background, draw_face, encode_jpeg  # noqa: E402


def best(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def scene(megapixels: float) -> np.ndarray:
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5) // 16 * 16
    height = width * 3 // 4
    canvas = background(width, height, seed=5)
    rng = np.random.default_rng(5)
    canvas = np.clip(canvas.astype(np.int16) + rng.integers(-12, 13, canvas.shape), 0, 255).astype(np.uint8)
    draw_face(canvas, width // 3, height // 3, height // 5, seed=1)
    return canvas


def crop(spec: dict, settings, work: Path) -> None:
    record = crop_face(spec, settings, str(work / "c.jpg"), str(work / "c.json"))
    assert record["status"] == "ok", record["reason"]


def full_decode(kind: str, path: Path) -> object:
    """The whole file decoded by the library the crop uses for it."""
    data = path.read_bytes()
    if kind == "jpg":
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if kind == "heic":
        import pillow_heif

        return np.asarray(pillow_heif.open_heif(io.BytesIO(data), bgr_mode=True))
    import rawpy

    with rawpy.imread(io.BytesIO(data)) as raw:
        if kind == "demosaic":
            return raw.postprocess(**decoders.RAW_POSTPROCESS)
        thumb = raw.extract_thumb()
    return cv2.imdecode(np.frombuffer(thumb.data, np.uint8), cv2.IMREAD_COLOR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    displayed = scene(args.megapixels)
    height, width = displayed.shape[:2]
    settings = validate_config({"person": "x", "source": {"url": "sqlite:///x.db"}}).crop
    face = {"x": 1 / 3 - 0.1, "y": 1 / 3 - 0.1333, "w": 0.2, "h": 0.2667}
    work = Path(tempfile.mkdtemp(prefix="likeness-bench-formats-"))
    files = {
        "JPEG (orientation 6)": ("jpg", encode_jpeg(displayed, 6, 90), "photoprism"),
        "HEIC (irot + EXIF 6)": ("heic", encode_heic(displayed, 6), "immich"),
        "DNG, full-size preview": ("dng", encode_dng(displayed, 6, preview=True), "digikam"),
        "DNG, demosaic": ("dng", encode_dng(displayed, 6, preview=False), "digikam"),
    }
    print(f"{width}x{height} ({width * height / 1e6:.1f} MP), best of {args.repeats}, seconds")
    print("| file | face | full decode | face / full decode |\n|---|---:|---:|---:|")
    for name, (suffix, data, manager) in files.items():
        path = work / f"photo.{suffix}"
        path.write_bytes(data)
        spec = {
            "marker_uid": "m",
            "path": str(path),
            **face,
            "file_width": width,
            "file_height": height,
            "file_orientation": 6,
            "manager": manager,
        }
        kind = "preview" if "preview" in name else ("demosaic" if "demosaic" in name else suffix)
        crop_once = functools.partial(crop, spec, settings, work)
        full_once = functools.partial(full_decode, kind, path)
        crop_once()  # warm: imports, page cache
        full_once()
        face_s, full_s = best(crop_once, args.repeats), best(full_once, args.repeats)
        print(f"| {name} | {face_s:.3f} | {full_s:.3f} | {face_s / full_s:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
