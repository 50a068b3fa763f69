"""The training bundle's contents (likeness.train.bundle); tests/test_pod.py runs one end to end."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import yaml
from fixtures import REPO_ROOT
from fixtures.training import CLASS_WORD, TRIGGER, double_config, make_images
from likeness.config import validate_section
from likeness.errors import LikenessError
from likeness.train import bundle, runplan


def _workdir(tmp_path: Path, reg: bool) -> tuple[Path, dict, runplan.RunPlan]:
    workdir = tmp_path / "home"
    dataset = workdir / "results" / "dataset" / "images"
    make_images(dataset, 2)
    cfg = double_config(tmp_path)
    if reg:
        make_images(tmp_path / "my_reg_images", 3, captions=False, seed=7)
        cfg["reg_images"] = str(tmp_path / "my_reg_images")
    settings = validate_section("train", cfg)
    runs = workdir / "results" / "train"
    plan = runplan.prepare_run(settings, dataset, dataset, trigger=TRIGGER, class_word=CLASS_WORD, runs_root=runs)
    for name in ("export/markers.tsv", "export/neighbours.tsv", "dataset/manifest.tsv", "captions/captions.tsv"):
        (workdir / "results" / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / "results" / name).write_text("a\tb\n1\t2\n")
    run_dir = f"results/train/{plan.run_id}"
    status = workdir / "results" / "train" / "status.json"
    status.write_text(json.dumps({"state": "ready", "run_id": plan.run_id, "run_dir": run_dir}))
    config = {"person": "Jane", "source": {"url": "sqlite:////photos/index.db", "originals": "/photos"}, "train": cfg}
    return workdir, config, plan


def test_the_bundle_carries_what_the_training_stage_reads_and_pod_sh(tmp_path: Path) -> None:
    workdir, config, plan = _workdir(tmp_path, reg=True)
    lines: list[str] = []
    target = bundle.write_bundle(
        config, workdir / "results/train/status.json", REPO_ROOT, workdir / "results/train/bundle.json",
        workdir=workdir, log=lines.append,
    )  # fmt: skip
    assert target == workdir / "results" / "train" / f"{plan.run_id}.tar.gz"
    with tarfile.open(target) as archive:
        names = set(archive.getnames())
        pod = archive.getmember(f"{plan.run_id}/pod.sh")
        packed = yaml.safe_load(archive.extractfile(f"{plan.run_id}/config.yaml").read())  # type: ignore[union-attr]
    run_dir = f"results/train/{plan.run_id}"
    for name in ("Snakefile", "pyproject.toml", "workflow/scripts/setup.sh", "workflow/likeness/train/launch.py",
                 "profiles/default/config.yaml", bundle.MARKER, "results/export/markers.tsv",
                 f"{run_dir}/train.toml", f"{run_dir}/plan.json"):  # fmt: skip
        assert f"{plan.run_id}/{name}" in names, name
    assert pod.mode & 0o111, "pod.sh is executable"
    assert sum(n.startswith(f"{plan.run_id}/results/dataset/images/") for n in names) == 4  # 2 images, 2 captions
    assert sum(n.startswith(f"{plan.run_id}/{run_dir}/reg/") for n in names) == 3
    # the user's regularisation folder is not on the pod: the config names the run folder's copy
    assert packed["train"]["reg_images"] == f"{run_dir}/reg"
    assert packed["source"] == config["source"] and packed["person"] == "Jane"
    assert not any("__pycache__" in n or "/.snakemake" in n or n.endswith(".pyc") for n in names)
    record = json.loads((workdir / "results/train/bundle.json").read_text())
    assert record["run_id"] == plan.run_id and record["bundle"] == str(target)
    assert len(lines) == 1 and f"bash {plan.run_id}/pod.sh" in lines[0]
    assert not list((workdir / "results" / "train").glob(".*.tmp"))  # written under a temporary name


def test_a_bundle_needs_a_prepared_run(tmp_path: Path) -> None:
    workdir, config, plan = _workdir(tmp_path, reg=False)
    (Path(plan.run_dir) / "plan.json").unlink()
    with pytest.raises(LikenessError, match=r"plan\.json is missing"):
        bundle.write_bundle(
            config, workdir / "results/train/status.json", REPO_ROOT, tmp_path / "b.json", workdir=workdir
        )
    with pytest.raises(LikenessError, match="names no training run"):
        bundle.write_bundle(config, tmp_path / "none.json", REPO_ROOT, tmp_path / "b.json", workdir=workdir)
