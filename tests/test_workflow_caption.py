"""The caption stage through the snakemake CLI: the model runs only on new faces, thresholds re-caption."""

from __future__ import annotations

import json

import pytest
from fixtures.library import build_small_library, write_sqlite
from fixtures.runs import copy_workflow, snakemake, write_config
from test_workflow_select import _manifest_uids

pytestmark = pytest.mark.snakemake
# The caption stage's own output as the target: the stages before it run, the training does not.
CAPTIONS = "results/captions/captions.tsv"


def _stats(workdir) -> dict:
    return json.loads((workdir / "results" / "captions" / "stats.json").read_text())


def _captions(workdir) -> dict[str, str]:
    folder = workdir / "results" / "captions" / "text"
    return {p.stem: p.read_text() for p in folder.glob("*.txt")}


def test_captions_are_incremental(tmp_path):
    library = build_small_library(tmp_path / "library")
    write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf")
    caption = {"standin": True, "cache_dir": str(tmp_path / "cache"), "class_word": "woman"}
    write_config(workdir, library.root, trigger="zqx", select={"top_n": 3}, caption=caption)

    snakemake(workdir, "--cores", "2", CAPTIONS)
    assert _stats(workdir)["model_runs"] == 3
    first = _captions(workdir)
    assert set(first) == set(_manifest_uids(workdir))
    assert all(text.startswith("zqx, woman") for text in first.values())
    # The caption files are the job's own declared output, not extra files in the selection's folder.
    assert not list((workdir / "results" / "dataset" / "images").glob("*.txt"))

    # Raising top_n: the model runs on the 2 new faces only; the 3 captions already written stay.
    mtimes = {p.stem: p.stat().st_mtime_ns for p in (workdir / "results/captions/text").glob("*.txt")}
    write_config(workdir, library.root, trigger="zqx", select={"top_n": 5}, caption=caption)
    snakemake(workdir, "--cores", "2", CAPTIONS)
    assert _stats(workdir)["model_runs"] == 2
    second = _captions(workdir)
    assert len(second) == 5
    assert {uid: second[uid] for uid in first} == first
    assert all((workdir / f"results/captions/text/{uid}.txt").stat().st_mtime_ns == mtimes[uid] for uid in first)

    # A threshold change rewrites captions from the stored probabilities: the model does not run.
    strict = {**caption, "general_threshold": 0.95, "character_threshold": 0.99}
    write_config(workdir, library.root, trigger="zqx", select={"top_n": 5}, caption=strict)
    snakemake(workdir, "--cores", "2", CAPTIONS)
    stats = _stats(workdir)
    assert stats["model_runs"] == 0 and stats["from_cache"] == 5
    third = _captions(workdir)
    assert all(len(third[uid]) <= len(second[uid]) for uid in third)
    assert third != second

    # Lowering top_n removes the caption files of faces no longer selected.
    write_config(workdir, library.root, trigger="zqx", select={"top_n": 2}, caption=strict)
    snakemake(workdir, "--cores", "2", CAPTIONS)
    assert set(_captions(workdir)) == set(_manifest_uids(workdir))
    assert len(_captions(workdir)) == 2


def test_offline_without_a_cached_model_is_one_line_naming_the_key(tmp_path):
    library = build_small_library(tmp_path / "library", n_photos=1)
    write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf")
    write_config(
        workdir,
        library.root,
        caption={"standin": False, "cache_dir": str(tmp_path / "cache"), "hub_cache": str(tmp_path / "hub")},
    )
    result = snakemake(workdir, "--cores", "2", CAPTIONS, check=False, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    lines = [
        line for line in (result.stdout + result.stderr).splitlines() if line.startswith("likeness: caption model")
    ]
    assert lines, result.stderr
    assert "set config key 'caption.model_dir'" in lines[0]
    log = (workdir / "logs" / "caption_faces.log").read_text()
    assert "caption.model_dir" in log
