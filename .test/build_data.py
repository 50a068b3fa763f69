#!/usr/bin/env python3
"""Build the small photo libraries the .test/ configs read, deterministically, into .test/data/.

    python .test/build_data.py [OUT_DIR]      (default: .test/data beside this file)

- data/sqlite-minimal/: PhotoPrism on SQLite, four usable faces of "Zoë O'Brien" on 800x600 photos (EXIF
  orientations 1, 6, 3, 8) plus one face of each kind PhotoPrism's rows exclude or mark (rejected, archived,
  missing flag, a file named by digits only, a RAW original's sidecar JPEG): tests/fixtures' small library.

The demo library (.test/config/demo.yaml) is built by resources/demo/build_demo.py.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# tests/fixtures builds the library with resources/synthlib, which uses likeness (workflow/).
sys.path[:0] = [str(REPO / "tests"), str(REPO / "workflow"), str(REPO / "resources")]

from fixtures.library import build_small_library, write_sqlite  # noqa: E402

LIBRARIES = {"sqlite-minimal": lambda root: write_sqlite(build_small_library(root))}


def build(out: Path) -> list[Path]:
    built = []
    for name, write in LIBRARIES.items():
        root = out / name
        if root.exists():
            shutil.rmtree(root)
        write(root)
        built.append(root)
    return built


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "data"
    for root in build(target):
        print(f"test library in {root}")
