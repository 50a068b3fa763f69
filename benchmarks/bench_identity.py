"""Identity check speed on this machine: faces per second, and proof that a second run embeds nothing.

Builds a PhotoPrism library with resources/synthlib's build_two_person_library (the demo's two public-domain
portraits pasted into 1600x1200 photos at different sizes, angles and lighting; N faces in all), runs the
workflow up to selection through `snakemake --cores 2` (crops at 1024 px, the default), then:

- **in the select job**: the identity line of logs/select_faces.log (faces, cache hits, computed, s/face
  of the computation: read crop, decode, detect, landmarks, descriptor, write the cache entry);
- **in-process, one core**: `identity.embed_crop` over the same crops with an empty cache, best of
  --rounds, as faces/s and s/face (the model's load time is printed apart);
- **second run**: `snakemake -R select_faces` and its identity line, which must say 0 computed.

Nothing here is a test: it prints numbers.

    python benchmarks/bench_identity.py [--faces 100] [--rounds 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# likeness from workflow/, the fake-library builder from resources/synthlib/.
sys.path[:0] = [str(ROOT / "workflow"), str(ROOT / "resources")]

from likeness import identity  # noqa: E402
from likeness.select.identity_check import crop_face_box  # noqa: E402
from synthlib.portraits import build_two_person_library  # noqa: E402

KEEP_ALL = {
    "min_crop_side": 64,
    "min_sharpness": 0,
    "max_other_face_share": 1.0,
    "duplicate_distance": 0,
    "brightness_min": 0,
    "brightness_max": 255,
    "max_clipped_share": 1.0,
    "top_n": 100000,
}


def snakemake(workdir: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, check=True, capture_output=True)
    return time.perf_counter() - started


def identity_line(workdir: Path) -> str:
    text = (workdir / "logs" / "select_faces.log").read_text()
    return next(line for line in text.splitlines() if line.startswith("identity: "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_identity_"))
    try:
        other = max(1, args.faces // 4)
        truth = build_two_person_library(tmp / "library", n_person=args.faces - other, n_other=other)
        workdir = tmp / "wf"
        workdir.mkdir()
        for part in ("Snakefile", "workflow", "profiles", "resources", "envs"):
            source = ROOT / part
            if source.is_dir():
                shutil.copytree(source, workdir / part, ignore=shutil.ignore_patterns("library", "__pycache__"))
            else:
                shutil.copy2(source, workdir / part)
        config = {
            "person": "Grace Hopper",
            "source": {
                "url": f"sqlite:///{tmp / 'library' / 'storage' / 'index.db'}",
                "originals": str(tmp / "library" / "originals"),
                "sidecar": str(tmp / "library" / "storage" / "sidecar"),
            },
            "select": KEEP_ALL,
            "caption": {"standin": True},
        }
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        snakemake(workdir, "--cores", "2", "results/crops/summary.tsv")
        wall = snakemake(workdir, "--cores", "2", "results/dataset/manifest.tsv")
        first = identity_line(workdir)
        wall_again = snakemake(workdir, "--cores", "2", "-R", "select_faces", "results/dataset/manifest.tsv")
        second = identity_line(workdir)

        # In-process, on the crops the workflow made, with an empty cache each round.
        records = [json.loads(p.read_text()) for p in sorted((workdir / "results" / "crops").glob("*.json"))]
        crops = [((workdir / r["image"]).read_bytes(), crop_face_box(r)) for r in records if r["status"] == "ok"]
        started = time.perf_counter()
        model = identity.load_model()
        load = time.perf_counter() - started
        best = best_cpu = float("inf")
        for round_ in range(args.rounds):
            cache = identity.EmbeddingCache(tmp / f"cache{round_}", model)
            started, started_cpu = time.perf_counter(), time.process_time()
            for data, box in crops:
                identity.embed_crop(model, cache, data, box)
            best = min(best, time.perf_counter() - started)
            best_cpu = min(best_cpu, time.process_time() - started_cpu)
        sides = sorted({r["output_side"] for r in records if r["status"] == "ok"})
        print(
            f"faces: {len(truth)} ({len(truth) - other} of the person, {other} of another),"
            f" crops {sides[0]}-{sides[-1]} px"
        )
        print(f"select job, cold cache: {first}  [job wall {wall:.1f} s incl. Snakemake start]")
        print(f"select job, second run: {second}  [job wall {wall_again:.1f} s]")
        match = re.search(r"([0-9.]+) s/face", first)
        if match:
            print(f"select job: {1 / float(match.group(1)):.1f} faces/s")
        print(
            f"in-process, 1 core, best of {args.rounds}:"
            f" {len(crops) / best:.1f} faces/s, {best / len(crops):.4f} s/face"
        )
        print(
            f"in-process CPU time (what other load on the machine does not inflate): {best_cpu / len(crops):.4f} s/face"
        )
        print(f"model load: {load:.2f} s (once per select job and per worker process)")
        print(f"load average during the run: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
