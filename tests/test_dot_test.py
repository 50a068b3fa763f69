"""The .test/ configs (the snakemake-workflows catalog convention) run end to end through the snakemake CLI.

Each config is laid over config.yaml with ``--configfile`` on a temporary copy of the workflow, after its
library is built there (the demo by resources/demo/build_demo.py, the others by .test/build_data.py). The
run must exit 0 with every stage's table written, a second dry run must find nothing to do (every declared
output exists and is current), and ``snakemake --lint`` must find nothing with that config either.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import REPO_ROOT
from fixtures.runs import copy_workflow, snakemake
from likeness import tables

pytestmark = pytest.mark.snakemake

CONFIGS = sorted(path.stem for path in (REPO_ROOT / ".test" / "config").glob("*.yaml"))
# How each config's library is built inside the copy (python SCRIPT OUT_DIR).
LIBRARY_BUILDERS = {
    "demo": ("resources/demo/build_demo.py", "resources/demo/library"),
    "sqlite-minimal": (".test/build_data.py", ".test/data"),
}
# One table per stage: export, crop, selection, captions, training status.
STAGE_TABLES = (
    "results/export/markers.tsv",
    "results/crops/summary.tsv",
    "results/dataset/manifest.tsv",
    "results/captions/captions.tsv",
)


def test_every_config_has_a_library_builder() -> None:
    assert CONFIGS and set(CONFIGS) == set(LIBRARY_BUILDERS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_runs_end_to_end(tmp_path: Path, name: str) -> None:
    workdir = copy_workflow(tmp_path / "wf", extra=("config.yaml", ".test"))
    script, out = LIBRARY_BUILDERS[name]
    subprocess.run([sys.executable, str(REPO_ROOT / script), str(workdir / out)], check=True, capture_output=True)
    configfile = ("--configfile", f".test/config/{name}.yaml")

    snakemake(workdir, *configfile)

    for table in STAGE_TABLES:
        assert (workdir / table).is_file(), table
    manifest = tables.read_table(workdir / "results/dataset/manifest.tsv")
    captions = tables.read_table(workdir / "results/captions/captions.tsv")
    assert manifest, "no face reached the training set"
    assert len(captions) == len(manifest)
    assert (workdir / "results/train/status.json").is_file()
    rerun = snakemake(workdir, "-n", *configfile)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr
    snakemake(workdir, "--lint", *configfile)
    assert_every_declared_log_is_written(workdir, configfile)
    assert_every_rule_explains_itself(workdir, configfile)


def assert_every_declared_log_is_written(workdir: Path, configfile: tuple[str, ...]) -> None:
    """Each output's job, per Snakemake's own record (--detailed-summary), left the log it declares."""
    summary = snakemake(workdir, "--detailed-summary", *configfile).stdout
    rows = tables.parse_table(summary[summary.index("output_file\t") :], "--detailed-summary")
    ran = [row for row in rows if row["status"] == "ok"]
    assert ran, "the summary lists no finished job"
    for row in ran:
        logs = [log for log in row["log-file(s)"].split(",") if log]
        assert logs, f"rule {row['rule']} declares no log"
        for log in logs:
            assert (workdir / log).is_file(), f"rule {row['rule']} did not write its log {log}"


def assert_every_rule_explains_itself(workdir: Path, configfile: tuple[str, ...]) -> None:
    """`snakemake --list-rules` shows each rule with its docstring: "name (what it does)"."""
    listing = snakemake(workdir, "--list-rules", *configfile).stdout
    rules = [line for line in listing.splitlines() if line and not line.startswith(" ")]
    assert len(rules) >= 15, listing
    undocumented = [line for line in rules if "(" not in line]
    assert not undocumented, f"rules without a docstring: {undocumented}"
