"""Helpers for the reliability suites: many-face libraries, runs in their own process group, snapshots."""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from library_helpers import SmallLibrary
from likeness.synthlib import Face, LibraryBuilder, Photo, background, draw_face
from workflow_helpers import KEEP_ALL, snakemake_env  # noqa: F401  (KEEP_ALL: re-exported for the suites)

PERSON = "Zoë O'Brien"


# Four face boxes per 400 x 300 photo, in fractions of the displayed image (the four quadrants).
_QUADRANT_BOXES = [
    (0.08, 0.1, 0.2, 0.27),
    (0.58, 0.1, 0.2, 0.27),
    (0.08, 0.6, 0.2, 0.27),
    (0.58, 0.6, 0.2, 0.27),
]


def build_many_faces_library(root: Path, n_faces: int, width: int = 400, height: int = 300) -> SmallLibrary:
    """``n_faces`` usable faces of the person, four to a small photo, each drawn with its own seed.

    Small photos keep a full run short (seconds) while the job count is that of a real library.
    """
    builder = LibraryBuilder(seed=11)
    library = SmallLibrary(root=root, builder=builder)
    library.person_uid = builder.add_subject(PERSON, slug="zoe-o-brien")
    per_photo = len(_QUADRANT_BOXES)
    for photo_index in range((n_faces + per_photo - 1) // per_photo):
        count = min(per_photo, n_faces - photo_index * per_photo)
        faces = [
            Face(*box, subject=library.person_uid, subj_src="manual", score=70 + (photo_index + n) % 30)
            for n, box in enumerate(_QUADRANT_BOXES[:count])
        ]
        photo = Photo(
            file_name=f"{2000 + photo_index // 100}/{photo_index % 12 + 1:02d}/IMG_{photo_index:04d}.jpg",
            width=width,
            height=height,
            faces=faces,
            orientation=[1, 6, 3, 8][photo_index % 4],
            taken_at=datetime(2020, 1, 1, 12, tzinfo=UTC) + timedelta(days=photo_index),
        )
        builder.add_photo(photo)
        canvas = background(width, height, seed=photo_index)
        for n, face in enumerate(faces):
            side = int(min(face.w * width, face.h * height))
            draw_face(
                canvas,
                int((face.x + face.w / 2) * width),
                int((face.y + face.h / 2) * height),
                side,
                seed=photo_index * per_photo + n,
            )
            library.faces[face.uid] = face
        photo.file_hash = builder.write_photo(library.originals / photo.file_name, canvas, photo.orientation)
        library.photos[photo.file_name] = photo
    return library


# -- snakemake in its own process group ------------------------------------------------------------------
@dataclass
class BackgroundRun:
    """A snakemake process started in a new session, so that a signal reaches it and its children.

    A process started in the background of a non-interactive shell ignores SIGINT; in its own session it
    gets the signal as a terminal's Ctrl-C would deliver it: to the whole process group.
    """

    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path

    def signal_group(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def wait(self, timeout: float = 300) -> int:
        return self.process.wait(timeout=timeout)

    @property
    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        """Make sure nothing of this run outlives the test (only this run's own process group)."""
        if self.process.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.process.wait(timeout=60)


def start_snakemake(workdir: Path, *args: str, name: str = "run", env: dict[str, str] | None = None) -> BackgroundRun:
    stdout_path = workdir.parent / f"{workdir.name}.{name}.stdout"
    stderr_path = workdir.parent / f"{workdir.name}.{name}.stderr"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args],
            cwd=workdir,
            env=snakemake_env(env),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # A test run started in the background (nohup, `&` in a script) inherits SIGINT ignored, and
            # Snakemake would then never see the Ctrl-C the test sends: give it the default disposition.
            preexec_fn=_default_sigint,
        )
    return BackgroundRun(process, stdout_path, stderr_path)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(condition: Callable[[], bool], run: BackgroundRun, timeout: float = 120, poll: float = 0.005) -> bool:
    """Poll ``condition`` until it holds (True) or the run ends first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if run.process.poll() is not None:
            return condition()
        time.sleep(poll)
    raise AssertionError(f"neither the condition nor the end of the run within {timeout} s:\n{run.output}")


# -- what is on disk -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    inode: int


def snapshot(folders: Iterable[Path], skip: Callable[[Path], bool] = lambda _p: False) -> dict[str, FileState]:
    """Every file and symlink under ``folders`` (links not followed): path -> size, mtime, inode."""
    states: dict[str, FileState] = {}
    for folder in folders:
        if not folder.exists():
            continue
        for path in sorted([folder, *folder.rglob("*")]):
            if skip(path):
                continue
            info = path.lstat()
            states[str(path)] = FileState(info.st_size, info.st_mtime_ns, info.st_ino)
    return states


def incomplete_outputs(workdir: Path) -> set[str]:
    """The outputs Snakemake marked incomplete (.snakemake/incomplete/ holds base64 file names)."""
    folder = workdir / ".snakemake" / "incomplete"
    if not folder.is_dir():
        return set()
    names = set()
    for marker in folder.iterdir():
        if marker.name.startswith("@") or marker.name == "migration_underway":
            continue
        names.add(base64.urlsafe_b64decode(marker.name.encode()).decode())
    return names


# Caption stats that describe the result; the rest (timings, cache hits, provider) describe the run.
STABLE_STATS = ("faces", "captioned", "model", "model_key", "skipped")


def results_files(workdir: Path) -> dict[str, bytes]:
    """Every file under results/ (hidden ones included): relative path -> bytes.

    results/train/ is left out: its run folder and status record carry timestamps, and the training
    stage's own interruption tests (test_workflow_train.py, test_training.py) cover it.
    """
    root = workdir / "results"
    return {
        str(p.relative_to(workdir)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and root / "train" not in p.parents
    }


def assert_same_results(reference: Path, other: Path, n_faces: int) -> None:
    """``other``'s results/ equals ``reference``'s byte for byte, but for the caption stats' run details."""
    expected, actual = results_files(reference), results_files(other)
    stats = "results/captions/stats.json"
    expected_stats, actual_stats = json.loads(expected.pop(stats)), json.loads(actual.pop(stats))
    assert sorted(actual) == sorted(expected), set(actual) ^ set(expected)
    differing = [name for name in expected if actual[name] != expected[name]]
    assert not differing, differing
    assert {k: actual_stats[k] for k in STABLE_STATS} == {k: expected_stats[k] for k in STABLE_STATS}
    # The final crops, manifests and captions are among the files compared: make sure they are there.
    assert sum(name.endswith(".jpg") for name in expected if name.startswith("results/crops/")) == n_faces
    assert any(name.endswith(".txt") for name in expected)
    for table in ("manifest.tsv", "excluded.tsv"):
        assert f"results/dataset/{table}" in expected


# -- unusual and hostile image files ---------------------------------------------------------------------
def write_png_header_only(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + checksum

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 16))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b""))


IMAGEMAGICK_CONVERT = "/usr/bin/convert"  # installed by workflow/scripts/setup.sh --dev


def write_cmyk_jpeg(path: Path, bgr: np.ndarray) -> None:
    """A CMYK JPEG of ``bgr``, converted by ImageMagick as a camera or print workflow would write it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb_path = path.with_name(path.stem + ".rgb-source.png")
    cv2.imwrite(str(rgb_path), bgr)
    try:
        subprocess.run(
            [IMAGEMAGICK_CONVERT, str(rgb_path), "-colorspace", "CMYK", "-quality", "95", f"jpeg:{path}"],
            check=True,
            capture_output=True,
        )
    finally:
        rgb_path.unlink()


XMP_PAYLOAD = b"http://ns.adobe.com/xap/1.0/\x00" + b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def _app_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def exif_orientation_payload(orientation: int, long_type: bool = False) -> bytes:
    """An Exif APP1 payload holding only the Orientation tag, as a SHORT (the standard) or a LONG."""
    typ, value = (4, struct.pack(">I", orientation)) if long_type else (3, struct.pack(">HH", orientation, 0))
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1) + struct.pack(">HHI", 0x0112, typ, 1) + value
    return b"Exif\x00\x00" + tiff + b"\x00\x00\x00\x00"


def encode_jpeg_xmp_first(displayed: np.ndarray, orientation: int, long_type: bool = False) -> bytes:
    """A JPEG showing ``displayed`` under ``orientation``, its XMP APP1 segment before the Exif APP1 (as
    some editors write it: OpenCV's reduced-size decode then does not see the orientation)."""
    from likeness.geometry import stored_from_displayed

    stored = np.ascontiguousarray(stored_from_displayed(displayed, orientation))
    ok, encoded = cv2.imencode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    data = encoded.tobytes()
    segments = _app_segment(0xE1, XMP_PAYLOAD) + _app_segment(0xE1, exif_orientation_payload(orientation, long_type))
    return data[:2] + segments + data[2:]
