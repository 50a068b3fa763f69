#!/usr/bin/env python3
"""Crop-stage benchmark: likeness through Snakemake against ImageMagick and a bare full-size decode.

    python benchmarks/bench_crop.py [N] [--rounds 3] [--noop-faces 1000] [--noop-baseline REV] [--workdir DIR] [--keep]

Builds a PhotoPrism library (resources/synthlib) of N faces of one person on 24-megapixel JPEGs (6000x4000,
EXIF orientations 1-8 in turn, 1-3 faces a photo, face boxes of 200-900 px), then measures on the same
faces, one after the other in this run:

- likeness: ``snakemake --cores 2`` on a fresh copy of the workflow (export + every crop job + summary),
  wall time end to end, divided by N; its no-op re-run on the same library shows the fixed part;
- ImageMagick: ``convert PHOTO -auto-orient +repage -crop WxH+X+Y +repage -resize 1024x1024> -quality 95 OUT``
  per face, two at a time, with the crop square that likeness.geometry computes for that face;
- full decode: ``cv2.imread`` of each face's photo at full resolution (EXIF orientation applied), in two
  processes: what any crop that decodes the whole photo pays at least.

Then, unless ``--noop-faces 0``, it builds a second library of ``--noop-faces`` faces on small photos,
runs the workflow once and times the no-op re-run (Snakemake must print "Nothing to be done"); with
``--noop-baseline REV`` the workflow as committed at REV runs on the same library too and the two no-op
re-runs alternate, so that the ratio shows what a change costs.

Each of the three runs ``--rounds`` times, interleaved, and the best round counts (a shared machine's
neighbours only ever make a round slower). Nothing is asserted about time: the figures are printed
(benchmarks/README.md records a run).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
# likeness from workflow/, the fake-library builder from resources/synthlib/.
sys.path[:0] = [str(REPO / "workflow"), str(REPO / "resources")]

from likeness import geometry, tables  # noqa: E402
from likeness.imageheader import read_header  # noqa: E402
from synthlib.drawing import background, draw_face  # noqa: E402
from synthlib.photoprism import Face, LibraryBuilder, Photo, sqlite_engine  # noqa: E402

PERSON = "Bench Person"
CONVERT = "/usr/bin/convert"  # Debian's ImageMagick 6, called directly
WORKFLOW_FILES = ("Snakefile", "workflow", "profiles", "envs")
# The crop stage alone (export, every crop job, the summary) is what is compared with ImageMagick.
CROP_TARGETS = ("results/export/markers.tsv", "results/crops/summary.tsv")
PARALLEL = 2  # --cores 2 for Snakemake, two convert processes, two decode processes


@dataclass(frozen=True)
class PhotoPlan:
    """One photo to write: displayed size, orientation, and the faces as (cx, cy, side) in pixels."""

    index: int
    width: int
    height: int
    orientation: int
    faces: tuple[tuple[int, int, int], ...]


# -- building the libraries ----------------------------------------------------------------------------
def plan_photos(faces_wanted: int, size: tuple[int, int], face_range: tuple[int, int], seed: int) -> list[PhotoPlan]:
    """Photos until the person has ``faces_wanted`` faces: one of theirs a photo, plus 0-2 bystanders.

    A person appears once in a photo; the bystanders are there because real photos have them (the export
    reads them as neighbours) and they must not be cropped. Every third photo is portrait.
    """
    rng = np.random.default_rng(seed)
    plans = []
    for index in range(faces_wanted):
        width, height = size if index % 3 != 2 else size[::-1]
        faces: list[tuple[int, int, int]] = []
        for _ in range(1 + int(rng.integers(0, 3))):
            for _attempt in range(50):  # place without overlap (a crowded photo simply gets fewer faces)
                side = int(rng.integers(face_range[0], face_range[1] + 1))
                cx = int(rng.integers(side // 2 + 1, width - side // 2 - 1))
                cy = int(rng.integers(side // 2 + 1, height - side // 2 - 1))
                if all(abs(cx - x) > (side + s) / 2 or abs(cy - y) > (side + s) / 2 for x, y, s in faces):
                    faces.append((cx, cy, side))
                    break
        plans.append(PhotoPlan(index, width, height, index % 8 + 1, tuple(faces)))
    return plans


_BACKGROUNDS: dict[tuple[int, int, int], np.ndarray] = {}


def _textured_background(width: int, height: int, variant: int) -> np.ndarray:
    """synthlib's background plus fine luma grain, so a 24 MP photo is ~8 MB like a camera's.

    Six variants are drawn once per process and reused: drawing 24 MP of texture takes a second,
    the faces make every photo different anyway.
    """
    key = (width, height, variant)
    if key not in _BACKGROUNDS:
        base = background(width, height, seed=variant)
        grain = np.random.default_rng(variant).integers(-12, 13, (height, width), dtype=np.int16)[..., None]
        _BACKGROUNDS[key] = np.clip(base + grain, 0, 255).astype(np.uint8)
    return _BACKGROUNDS[key].copy()


def _write_photo(args: tuple[PhotoPlan, str]) -> str:
    plan, path = args
    canvas = _textured_background(plan.width, plan.height, plan.index % 6)
    for number, (cx, cy, side) in enumerate(plan.faces):
        draw_face(canvas, cx, cy, side, seed=plan.index * 4 + number)
    return LibraryBuilder.write_photo(Path(path), canvas, plan.orientation)


def build_library(root: Path, plans: Sequence[PhotoPlan]) -> list[str]:
    """Write the photos (two processes) and PhotoPrism's SQLite database; returns the person's marker UIDs."""
    originals = root / "originals"
    builder = LibraryBuilder(seed=31)
    person = builder.add_subject(PERSON)
    photos = []
    for plan in plans:
        photo = Photo(
            file_name=f"{2000 + plan.index // 400}/{plan.index % 12 + 1:02d}/IMG_{plan.index:05d}.jpg",
            width=plan.width,
            height=plan.height,
            orientation=plan.orientation,
        )
        for number, (cx, cy, side) in enumerate(plan.faces):
            photo.faces.append(
                Face(
                    (cx - side / 2) / plan.width,
                    (cy - side / 2) / plan.height,
                    side / plan.width,
                    side / plan.height,
                    subject=person if number == 0 else "",
                    subj_src="manual" if number == 0 else "",
                    score=80,
                    size=side // 4,
                )
            )
        photos.append(builder.add_photo(photo))
    jobs = [(plan, str(originals / photo.file_name)) for plan, photo in zip(plans, photos, strict=True)]
    with ProcessPoolExecutor(PARALLEL) as pool:
        hashes = list(pool.map(_write_photo, jobs, chunksize=4))
    for photo, file_hash in zip(photos, hashes, strict=True):
        photo.file_hash = file_hash
    builder.write_database(sqlite_engine(root / "storage" / "index.db"))
    return [photo.faces[0].uid for photo in photos]


# -- the three ways to crop ----------------------------------------------------------------------------
def prepare_workflow(workdir: Path, library: Path, repo: Path = REPO) -> Path:
    """A fresh copy of the workflow in ``repo`` (this checkout by default) whose config points at ``library``."""
    workdir.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, workdir / name)
    shutil.copytree(repo / "resources", workdir / "resources", ignore=shutil.ignore_patterns("library", "__pycache__"))
    config = yaml.safe_load((repo / "config.yaml").read_text())
    config["person"] = PERSON
    config["source"] = {
        "url": f"sqlite:///{library / 'storage' / 'index.db'}",
        "originals": str(library / "originals"),
        "sidecar": str(library / "storage" / "sidecar"),
    }
    # Small benchmark photos: let every readable face into the training set, so the whole workflow runs.
    config["select"] = {"min_crop_side": 64, "min_sharpness": 0, "max_other_face_share": 1.0}
    config["caption"] = {**config.get("caption", {}), "cache_dir": str(workdir / "cache")}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir


def run_snakemake(workdir: Path, *targets: str) -> tuple[float, str]:
    """Wall seconds of ``snakemake --cores 2 [targets]`` in ``workdir`` and its output; exits on failure."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    start = time.perf_counter()
    command = ["snakemake", "--cores", str(PARALLEL), *targets]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode != 0:
        sys.exit(f"bench_crop: snakemake failed in {workdir} (exit {done.returncode}):\n{output[-3000:]}")
    return seconds, output


def summary_line(workdir: Path) -> str:
    table = tables.read_table(workdir / "results" / "crops" / "summary.tsv")
    ok = sum(1 for row in table if row["status"] == "ok")
    return f"{ok} of {len(table)} faces cropped"


@dataclass(frozen=True)
class CropJob:
    photo: str
    left: int
    top: int
    side: int
    out: str


def crop_jobs(workdir: Path, outdir: Path) -> list[CropJob]:
    """The person's faces with the square likeness crops, from the export the workflow wrote."""
    rows = (workdir / "results" / "export" / "markers.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    factor = float(config["crop"]["factor"])
    jobs = []
    for line in rows[1:]:
        row = dict(zip(header, line.split("\t"), strict=True))
        if row["status"] != "ok":
            continue
        photo = str(Path(config["source"]["originals"]) / row["file_name"])
        stored = read_header(photo)
        assert stored is not None, photo
        width, height = geometry.displayed_size(stored.width, stored.height, stored.orientation)
        face = geometry.marker_rect(float(row["x"]), float(row["y"]), float(row["w"]), float(row["h"]), width, height)
        square = geometry.square_crop(face, width, height, factor)
        jobs.append(CropJob(photo, square.left, square.top, square.side, str(outdir / f"{row['marker_uid']}.jpg")))
    return jobs


def run_imagemagick(jobs: Sequence[CropJob]) -> float:
    """Wall seconds for ``convert -auto-orient -crop`` on every face, two processes at a time."""

    def one(job: CropJob) -> None:
        command = [
            # +repage after -auto-orient: IM 6.9.11 leaves a page offset after orientation 7 (transverse),
            # and the -crop then misses the image ("geometry does not contain image", a 1x1 result).
            CONVERT, job.photo, "-auto-orient", "+repage",
            "-crop", f"{job.side}x{job.side}+{job.left}+{job.top}", "+repage",
            "-resize", "1024x1024>", "-quality", "95", job.out,
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, jobs))
    return time.perf_counter() - start


def _decode_full(path: str) -> tuple[int, int]:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    return image.shape[1], image.shape[0]


def run_full_decode(photos: Sequence[str]) -> float:
    """Wall seconds to decode each face's photo at full size, two processes (started before timing)."""
    with ProcessPoolExecutor(PARALLEL) as pool:
        list(pool.map(_decode_full, photos[:PARALLEL]))  # both workers up and cv2 imported
        start = time.perf_counter()
        list(pool.map(_decode_full, photos))
        return time.perf_counter() - start


def same_crop_check(jobs: Sequence[CropJob], workdir: Path) -> str:
    """ImageMagick's and likeness's crops side by side: both must show the same square of the photo."""
    diffs, mismatches = [], []
    for job in jobs[:8]:
        theirs = cv2.imread(job.out)
        ours = cv2.imread(str(workdir / "results" / "crops" / Path(job.out).name))
        if theirs is None or ours is None or theirs.shape != ours.shape:
            shapes = [None if image is None else image.shape[:2] for image in (theirs, ours)]
            mismatches.append(f"{Path(job.out).stem}: ImageMagick {shapes[0]}, likeness {shapes[1]}")
            continue
        diffs.append(float(np.mean(cv2.absdiff(theirs, ours))))
    line = f"largest mean abs diff over {len(diffs)} faces = {max(diffs, default=float('nan')):.2f} / 255"
    return line + "".join(f"; size differs for {m}" for m in mismatches)


# -- report ----------------------------------------------------------------------------------------------
def timed(label: str, action: Callable[[], object]) -> object:
    start = time.perf_counter()
    result = action()
    print(f"  {label}: {time.perf_counter() - start:.1f} s", flush=True)
    return result


def timing_run(faces: int, base: Path, rounds: int) -> None:
    print(f"building {faces} faces on 24 MP JPEGs (6000x4000) ...", flush=True)
    plans = plan_photos(faces, (6000, 4000), (200, 900), seed=faces)
    library = base / "library24"
    timed("library", lambda: build_library(library, plans))
    photo_bytes = sum(p.stat().st_size for p in (library / "originals").rglob("*.jpg"))
    total_faces = sum(len(plan.faces) for plan in plans)
    print(f"  {len(plans)} photos, {photo_bytes / len(plans) / 1e6:.1f} MB each, {total_faces} faces in all")

    workdir = prepare_workflow(base / "workflow24", library)
    outdir = base / "imagemagick"
    outdir.mkdir()
    # The machine may be shared: each method runs `rounds` times, interleaved, and the best round counts.
    likeness_runs, noop_runs, magick_runs, decode_runs = [], [], [], []
    for round_number in range(rounds):
        shutil.rmtree(workdir / "results", ignore_errors=True)
        shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
        likeness_runs.append(run_snakemake(workdir, *CROP_TARGETS)[0])
        noop_runs.append(run_snakemake(workdir, *CROP_TARGETS)[0])
        jobs = crop_jobs(workdir, outdir)
        magick_runs.append(run_imagemagick(jobs))
        decode_runs.append(run_full_decode([job.photo for job in jobs]))
        print(f"  round {round_number + 1}: likeness {likeness_runs[-1]:.1f} s, "
              f"ImageMagick {magick_runs[-1]:.1f} s, full decode {decode_runs[-1]:.1f} s; "
              f"{summary_line(workdir)}", flush=True)  # fmt: skip
    likeness_s, noop_s, magick_s, decode_s = map(min, (likeness_runs, noop_runs, magick_runs, decode_runs))
    largest_diff = same_crop_check(jobs, workdir)

    per_face = {
        "likeness crop stage (snakemake --cores 2)": likeness_s / faces,
        "ImageMagick convert -auto-orient -crop, 2 at a time": magick_s / len(jobs),
        "full-resolution cv2.imread, 2 processes": decode_s / len(jobs),
    }
    print()
    print(f"{f'per face, {faces} faces, best of {rounds}':<56}{'s/face':>9}{'total s':>9}")
    for (label, seconds), count in zip(per_face.items(), (faces, len(jobs), len(jobs)), strict=True):
        print(f"{label:<56}{seconds:>9.4f}{seconds * count:>9.1f}")
    values = list(per_face.values())
    print(f"ImageMagick / likeness: {values[1] / values[0]:.2f}x   (target: at least 3x)")
    print(f"full decode / likeness: {values[2] / values[0]:.2f}x")
    print(f"likeness fixed part (its no-op re-run): {noop_s:.2f} s; without it "
          f"{(likeness_s - noop_s) / faces:.4f} s/face")  # fmt: skip
    print(f"same crops, ImageMagick vs likeness: {largest_diff}")


def baseline_checkout(revision: str, base: Path) -> Path:
    """The workflow as committed at ``revision`` (git archive), with this checkout's built C helper."""
    tree = base / f"baseline-{revision}"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    # The C helper sits beside its source, wherever that revision keeps it.
    for helper in (REPO / "workflow" / "likeness").rglob("_jpegskip*.so"):
        for source in (tree / "workflow" / "likeness").rglob("_jpegskip.c"):
            shutil.copy2(helper, source.parent / helper.name)
    return tree


def noop_run(faces: int, base: Path, rounds: int, baseline: str = "") -> None:
    """The whole workflow (every stage, training prepared) once, then the no-op re-run a user would do.

    With ``baseline`` (a git revision) the workflow of that revision runs on the same library too, and
    the no-op re-runs of both alternate ``rounds`` times: the ratio of their medians is printed.
    """
    print(f"\nbuilding {faces} faces on small photos (640x480) for the no-op re-run ...", flush=True)
    plans = plan_photos(faces, (640, 480), (40, 120), seed=faces + 1)
    library = base / "library_small"
    timed("library", lambda: build_library(library, plans))
    workdirs = {"current": prepare_workflow(base / "workflow_small", library)}
    if baseline:
        workdirs[baseline] = prepare_workflow(base / "workflow_baseline", library, baseline_checkout(baseline, base))
    noop: dict[str, list[float]] = {label: [] for label in workdirs}
    for label, workdir in workdirs.items():
        first_s, _ = run_snakemake(workdir)
        print(f"  first run ({label}): {first_s:.1f} s ({first_s / faces:.4f} s/face), {summary_line(workdir)}")
    for _round in range(rounds):
        for label, workdir in workdirs.items():
            seconds, output = run_snakemake(workdir)
            if "Nothing to be done" not in output:
                print(f"  WARNING: Snakemake did not say Nothing to be done ({label})")
            noop[label].append(seconds)
    medians = {label: statistics.median(values) for label, values in noop.items()}
    print(f"no-op re-run over {faces} faces: {medians['current']:.2f} s median of {rounds}   (target: under 3 s)")
    if baseline:
        ratio = medians["current"] / medians[baseline]
        print(f"no-op re-run at {baseline}: {medians[baseline]:.2f} s median of {rounds}; "
              f"current / {baseline}: {ratio:.3f}   (target: at most 1.10)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("faces", nargs="?", type=int, default=60, help="faces for the timing run (default 60)")
    parser.add_argument("--noop-faces", type=int, default=1000, help="faces for the no-op re-run (0: skip)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds, the best counts (default 3)")
    parser.add_argument("--workdir", type=Path, help="where to build (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the libraries and results")
    parser.add_argument("--noop-baseline", default="", help="git revision whose no-op re-run to compare with")
    args = parser.parse_args(argv)
    if not Path(CONVERT).exists():
        sys.exit(f"bench_crop: ImageMagick's {CONVERT} is missing (apt-get install imagemagick)")

    base = Path(tempfile.mkdtemp(prefix="likeness-bench-", dir=args.workdir))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, OpenCV {cv2.__version__}; work in {base}")  # fmt: skip
    try:
        if args.faces > 0:
            timing_run(args.faces, base, max(1, args.rounds))
        if args.noop_faces > 0:
            noop_run(args.noop_faces, base, max(1, args.rounds), args.noop_baseline)
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
