"""Show that a change of code changes no result: every file under results/, before and after, by digest.

    python benchmarks/compare_results.py --baseline REV [--library demo|faces] [--faces 200] [--keep DIR]
                                         [--config KEY=VALUE ...]

The library is built once by this checkout (the demo library, or ``--faces`` faces of one person on
small photos, as bench_crop.py builds them); the workflow of ``REV`` (git archive) and the workflow of
this working tree each run ``snakemake --cores 2`` on it in their own copy. Then every file under each
copy's ``results/`` is hashed (SHA-256) and the two lists are compared file by file. Fields that record
when something happened or how long it took are blanked first (JSON keys in ``TIME_KEYS``), and so are
absolute paths of the two copies (each copy runs in its own folder). Exit status 1 when any file differs
or exists on one side only; the differing files are listed.

``--config select.crowded=exclude`` (repeatable; a dotted key, a YAML value) is set in the working
tree's config.yaml only: a setting the baseline does not know, whose value should reproduce the
baseline's results (e.g. `select.crowded: exclude` against a revision from before masks).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_crop import baseline_checkout, build_library, plan_photos, prepare_workflow, run_snakemake  # noqa: E402

# JSON keys whose values record time (a clock reading, or how long a model took to load or run: the
# caption stats), blanked before hashing. Every other key, dates of photos included, is compared.
TIME_KEYS = frozenset({"updated", "installed", "created", "load_seconds", "inference_seconds"})


def _blank_times(value: object) -> object:
    if isinstance(value, dict):
        return {key: ("<time>" if key in TIME_KEYS else _blank_times(item)) for key, item in value.items()}
    if isinstance(value, list):
        return [_blank_times(item) for item in value]
    return value


def file_digest(path: Path, workdir: Path) -> str:
    data = path.read_bytes().replace(str(workdir).encode(), b"<workdir>")
    if path.suffix == ".json":
        with contextlib.suppress(ValueError):
            data = json.dumps(_blank_times(json.loads(data)), sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def result_digests(workdir: Path) -> dict[str, str]:
    results = workdir / "results"
    return {
        str(path.relative_to(results)): file_digest(path, workdir)
        for path in sorted(results.rglob("*"))
        if path.is_file()
    }


def prepare_demo(workdir: Path, repo: Path, library: Path) -> Path:
    """A copy of ``repo``'s workflow with the demo ``library`` (built once by this checkout's builder).

    The library is copied with its files' times: selection.json's key covers each photo's size and
    modification time, so two separately built libraries would differ there and nowhere else.
    """
    workdir.mkdir(parents=True)
    for name in ("Snakefile", "config.yaml", "workflow", "profiles", "envs", "resources"):
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=shutil.ignore_patterns("__pycache__", "library"))
        else:
            shutil.copy2(source, workdir / name)
    shutil.copytree(library, workdir / "resources" / "demo" / "library", symlinks=True)
    return workdir


def build_demo_library(library: Path) -> Path:
    subprocess.run(
        [sys.executable, str(REPO / "resources" / "demo" / "build_demo.py"), str(library)],
        check=True,
        capture_output=True,
    )
    return library


def parse_setting(text: str) -> tuple[list[str], object]:
    """``a.b=VALUE`` -> (["a", "b"], VALUE read as YAML: ``exclude``, ``0.35``, ``null``, ``[1, 2]``)."""
    key, separator, value = text.partition("=")
    path = [part for part in key.strip().split(".") if part]
    if not separator or not path:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a dotted key), got {text!r}")
    return path, yaml.safe_load(value)


def apply_settings(config_path: Path, settings: Sequence[tuple[list[str], object]]) -> None:
    """Set each dotted key in the YAML file ``config_path`` (nested tables made as needed)."""
    if not settings:
        return
    config = yaml.safe_load(config_path.read_text()) or {}
    for path, value in settings:
        table = config
        for part in path[:-1]:
            table = table.setdefault(part, {})
        table[path[-1]] = value
    config_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


def compare(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """One line per file that is not the same in both: moved (same name and bytes, another folder),
    only before, only after, or differs."""
    gone = {name for name in before if name not in after}
    new = {name for name in after if name not in before}
    moved = {}
    for name in sorted(gone):
        target = next((n for n in sorted(new) if Path(n).name == Path(name).name and after[n] == before[name]), None)
        if target is not None:
            moved[name] = target
            new.discard(target)
    problems = [f"moved, same bytes: {name} -> {target}" for name, target in moved.items()]
    for name in sorted(set(before) | set(after)):
        if name in moved or name in moved.values():
            continue
        if name in gone:
            problems.append(f"only before: {name}")
        elif name in new:
            problems.append(f"only after:  {name}")
        elif before[name] != after[name]:
            problems.append(f"differs:     {name}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare this working tree with")
    parser.add_argument("--library", choices=("demo", "faces"), default="demo")
    parser.add_argument("--faces", type=int, default=200, help="faces of the synthetic library (--library faces)")
    parser.add_argument("--keep", default="", help="folder to keep both runs in (default: a temporary one)")
    parser.add_argument(
        "--config",
        action="append",
        type=parse_setting,
        default=[],
        metavar="KEY=VALUE",
        help="set a dotted config key in the working tree's run only (repeatable)",
    )
    args = parser.parse_args(argv)

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="likeness-compare-"))
    base.mkdir(parents=True, exist_ok=True)
    baseline_tree = baseline_checkout(args.baseline, base)
    if args.library == "demo":
        library = build_demo_library(base / "demo-library")
        workdirs = {
            args.baseline: prepare_demo(base / "before", baseline_tree, library),
            "working tree": prepare_demo(base / "after", REPO, library),
        }
    else:
        library = base / "library"
        build_library(library, plan_photos(args.faces, (640, 480), (40, 120), seed=args.faces + 1))
        workdirs = {
            args.baseline: prepare_workflow(base / "before", library, baseline_tree),
            "working tree": prepare_workflow(base / "after", library),
        }
    apply_settings(workdirs["working tree"] / "config.yaml", args.config)
    for path, value in args.config:
        print(f"working tree: {'.'.join(path)} = {value!r}")
    digests = {}
    for label, workdir in workdirs.items():
        seconds, _ = run_snakemake(workdir)
        digests[label] = result_digests(workdir)
        print(f"{label}: {len(digests[label])} files under results/ ({seconds:.0f} s)")
    before, after = digests.values()
    problems = compare(before, after)
    library_name = "demo library" if args.library == "demo" else f"{args.faces}-face library"
    if problems:
        print(f"{len(problems)} of {len(set(before) | set(after))} files differ on the {library_name}:")
        print("\n".join(f"  {line}" for line in problems))
    else:
        print(f"all {len(after)} files under results/ are identical on the {library_name} (time fields blanked)")
    if args.keep:
        (base / "digests.yaml").write_text(yaml.safe_dump(digests, sort_keys=True))
        print(f"runs and digests kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
