"""Scale benchmark: the workflow through the captions on N faces of one person, stage by stage.

    python benchmarks/bench_scale.py N [--workdir DIR] [--keep] [--no-empty] [--no-identity] [--json PATH]

Builds a PhotoPrism library (resources/synthlib, as bench_crop.py's no-op library: 640x480 photos,
1-3 faces a photo, face boxes of 40-120 px) with N faces of the person, and a fresh copy of the
workflow on it. Then, one Snakemake process after the other, each under /usr/bin/time:

- the dry run (``snakemake -n``: the parse-time export and the whole job list);
- export, crop (one job per face and the summary), select (the identity pass and the choice), caption:
  each ``snakemake --cores 2 <the stage's table>``; the rest of the workflow (training prepared, the
  report) runs once after them so that the no-op re-run covers every rule;
- the no-op re-run of the whole workflow (Snakemake must print "Nothing to be done").

Per stage it prints the wall time, the time per face of the stage's work (the wall time less the fixed
part every Snakemake process pays: its no-op re-run), and the peak resident memory of the stage's
process tree (GNU time's maximum RSS: the largest of the Snakemake process, in which the `run:` jobs
execute, and its children, such as the identity workers). The identity pass is the embedding part of
the select stage (its log line's count and seconds), shown on its own line and left out of select's.

``--no-identity`` turns the identity check off (select.max_identity_distance: null): on a loaded
machine the model's ~0.05-0.8 s a face dominates everything at 20,000 faces. A library already built in
``--workdir`` for the same N is reused.

Unless ``--no-empty``, it then measures Snakemake's own cost per job: a Snakefile with one empty `run:`
job per face (touch the output), same profile settings, its run, dry run and no-op re-run.

Nothing is asserted about time: the figures are printed (benchmarks/README.md records runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_crop import build_library, plan_photos, prepare_workflow  # noqa: E402

PARALLEL = 2
STAGES = (
    ("export", "results/export/markers.tsv"),
    ("crop", "results/crops/summary.tsv"),
    ("select", "results/dataset/manifest.tsv"),
    ("caption", "results/captions/captions.tsv"),
)
GNU_TIME = "/usr/bin/time"
# select's log line: "identity: 980 faces, 0 from cache, 980 computed (dlib ..., 0.051 s/face, 2 process(es))"
IDENTITY_LINE = re.compile(r"identity: (\d+) faces, \d+ from cache, (\d+) computed \(.*?([0-9.]+) s/face")

EMPTY_SNAKEFILE = """\
N = {faces}


rule all:
    input:
        expand("out/{i}.txt", i=range(N)),


rule one:
    output:
        "out/{i}.txt",
    run:
        open(output[0], "w").close()
"""


@dataclass
class Measure:
    label: str
    wall_s: float
    max_rss_mb: float
    faces: int = 0
    net_s: float | None = None  # the stage's work: wall time less the fixed part

    @property
    def per_face(self) -> float | None:
        return self.net_s / self.faces if self.net_s is not None and self.faces else None


def timed_snakemake(workdir: Path, label: str, *arguments: str, expect: str = "") -> tuple[Measure, str]:
    """One Snakemake process under GNU time: wall seconds, peak RSS of its process tree, its output."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    stats = workdir / f".time-{label}"
    command = [GNU_TIME, "-f", "%e %M", "-o", str(stats), "snakemake", "--cores", str(PARALLEL), *arguments]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode != 0:
        sys.exit(f"bench_scale: {label} failed in {workdir} (exit {done.returncode}):\n{output[-4000:]}")
    if expect and expect not in output:
        print(f"  WARNING: {label}: Snakemake did not print {expect!r}")
    max_rss_kb = int(stats.read_text().split()[-1])
    return Measure(label, wall, max_rss_kb / 1024), output


def identity_seconds(workdir: Path) -> tuple[int, float]:
    """Faces the select stage embedded and the seconds it took (its log's identity line)."""
    match = IDENTITY_LINE.search((workdir / "logs" / "select_faces.log").read_text())
    if not match:
        return 0, 0.0
    computed, seconds_per_face = int(match.group(2)), float(match.group(3))
    return computed, computed * seconds_per_face


def person_faces(workdir: Path) -> int:
    with (workdir / "results" / "export" / "markers.tsv").open() as table:
        return sum(1 for _ in table) - 1


def without_identity_check(workdir: Path) -> None:
    """select.max_identity_distance: null in the workflow copy's config (the identity pass is skipped)."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["select"]["max_identity_distance"] = None
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def run_workflow(faces: int, base: Path, identity: bool = True) -> list[Measure]:
    library = base / "library"
    built = library / ".built"
    if built.is_file() and built.read_text() == str(faces):
        print(f"reusing the library of {faces} faces in {library}", flush=True)
    else:
        print(f"building {faces} faces on small photos (640x480) ...", flush=True)
        started = time.perf_counter()
        shutil.rmtree(library, ignore_errors=True)
        build_library(library, plan_photos(faces, (640, 480), (40, 120), seed=faces + 1))
        built.write_text(str(faces))
        print(f"  library built in {time.perf_counter() - started:.1f} s", flush=True)
    shutil.rmtree(base / "workflow", ignore_errors=True)
    workdir = prepare_workflow(base / "workflow", library)
    if not identity:
        without_identity_check(workdir)
    measures: list[Measure] = []
    dry, _ = timed_snakemake(workdir, "dry run", "-n", "--quiet", "rules")
    measures.append(dry)
    print(f"  dry run: {dry.wall_s:.2f} s", flush=True)
    for stage, target in STAGES:
        measure, _ = timed_snakemake(workdir, stage, target)
        measures.append(measure)
        print(f"  {stage}: {measure.wall_s:.1f} s, {measure.max_rss_mb:.0f} MB", flush=True)
    rest, _ = timed_snakemake(workdir, "rest (training prepared, report)")
    measures.append(rest)
    noop, _ = timed_snakemake(workdir, "no-op re-run", expect="Nothing to be done")
    measures.append(noop)
    faces_exported = person_faces(workdir)
    computed, embedding_s = identity_seconds(workdir)
    for measure in measures:
        if measure.label in {stage for stage, _ in STAGES}:
            measure.faces = faces_exported
            measure.net_s = max(measure.wall_s - noop.wall_s, 0.0)
            if measure.label == "select":
                measure.net_s = max(measure.net_s - embedding_s, 0.0)
    select_index = next(i for i, m in enumerate(measures) if m.label == "select")
    select = measures[select_index]
    identity_pass = Measure("identity pass (in select)", embedding_s, select.max_rss_mb, computed, embedding_s)
    measures.insert(select_index, identity_pass)
    return measures


def run_empty(faces: int, base: Path) -> list[Measure]:
    """Snakemake's own cost: one empty `run:` job per face under the workflow's profile settings."""
    workdir = base / "empty"
    (workdir / "profiles" / "default").mkdir(parents=True)
    shutil.copy2(REPO / "profiles" / "default" / "config.yaml", workdir / "profiles" / "default" / "config.yaml")
    (workdir / "Snakefile").write_text(EMPTY_SNAKEFILE.replace("{faces}", str(faces)))
    dry, _ = timed_snakemake(workdir, "empty: dry run", "-n", "--quiet", "rules")
    run, _ = timed_snakemake(workdir, "empty: run")
    noop, _ = timed_snakemake(workdir, "empty: no-op re-run", expect="Nothing to be done")
    run.faces, run.net_s = faces, max(run.wall_s - noop.wall_s, 0.0)
    return [dry, run, noop]


def print_table(faces: int, measures: Sequence[Measure]) -> None:
    print(f"\n{faces} faces, snakemake --cores {PARALLEL}; s/face is the stage's work (wall less the no-op re-run)")
    print(f"| {'step':<34} | {'wall s':>8} | {'s/face':>8} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 36}|{'-' * 10}:|{'-' * 10}:|{'-' * 13}:|")
    for m in measures:
        per_face = f"{m.per_face:.4f}" if m.per_face is not None else ""
        print(f"| {m.label:<34} | {m.wall_s:>8.2f} | {per_face:>8} | {m.max_rss_mb:>11.0f} |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("faces", type=int, help="faces of the person in the synthetic library")
    parser.add_argument("--workdir", type=Path, help="where to build (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the library and the workflow copies")
    parser.add_argument("--no-empty", action="store_true", help="skip the empty-job measure of Snakemake")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--no-identity",
        action="store_true",
        help="select.max_identity_distance: null (skip the identity pass, whose per-face cost is the model's)",
    )
    args = parser.parse_args(argv)
    base = args.workdir or Path(tempfile.mkdtemp(prefix="likeness-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}; in {base}; "
        f"load average {os.getloadavg()[0]:.2f} (figures from a busy machine are not comparable)"
    )
    try:
        measures = run_workflow(args.faces, base, identity=not args.no_identity)
        print_table(args.faces, measures)
        empty = [] if args.no_empty else run_empty(args.faces, base)
        if empty:
            print_table(args.faces, empty)
            crop = next(m for m in measures if m.label == "crop")
            job = empty[1]
            if crop.per_face and job.per_face:
                print(f"crop stage per face / Snakemake's empty job: {crop.per_face / job.per_face:.2f}")
            noop, empty_noop = measures[-1], empty[-1]
            print(f"no-op re-run / empty workflow's no-op re-run: {noop.wall_s / empty_noop.wall_s:.2f}")
        # The benchmark's own Snakemake threads count in it: a high figure here alone is no sign of a busy machine.
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")
        if args.json:
            figures = {
                "faces": args.faces,
                "measures": [asdict(m) | {"per_face": m.per_face} for m in measures + empty],
            }
            args.json.write_text(json.dumps(figures, indent=1))
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
