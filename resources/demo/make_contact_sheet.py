#!/usr/bin/env python3
"""Redraw resources/demo/contact_sheet.png, the README's picture of the demo's selected faces.

    .venv/bin/python resources/demo/build_demo.py && .venv/bin/snakemake --cores 2
    .venv/bin/python resources/demo/make_contact_sheet.py [WORKDIR]

It draws the training set of the finished demo run in WORKDIR (default: this repository) with the
report's own code (likeness.report.dataset.selected_sheet, the figure results/report/selected.png), so
the picture always shows what the current code draws. Crop paths in the manifest are relative to WORKDIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "workflow"))

from likeness.report.dataset import selected_sheet  # noqa: E402

COLUMNS = 6  # narrower than the report's sheet, so that the README shows the tiles larger
TILE = 150


def main(argv: list[str]) -> int:
    workdir = Path(argv[1]) if len(argv) > 1 else HERE.parents[1]
    manifest = workdir / "results" / "dataset" / "manifest.tsv"
    if not manifest.is_file():
        print(f"no {manifest}: run the demo first (see this script's docstring)", file=sys.stderr)
        return 1
    out = HERE / "contact_sheet.png"
    width, height = selected_sheet(manifest, out, columns=COLUMNS, tile=TILE, root=workdir)
    print(f"{out}: {width} x {height} px")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
