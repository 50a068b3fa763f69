"""Headshots and the best epoch through the snakemake CLI, with the sd-scripts test doubles.

The training double records the training images and the epoch to favour in its LoRAs; the generation
double (tests/doubles/sdxl_gen_img.py) renders each epoch's "headshots" from those images, warped less
at later epochs, except that one middle epoch is not warped at all. The workflow's identity model must
pick exactly that epoch, and copy its LoRA to results/lora/<trigger>.safetensors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fixtures.runs import KEEP_ALL, copy_workflow, snakemake, write_config
from fixtures.training import double_config, double_env, read_jsonl
from likeness.sdscripts.options import gen_options
from synthlib.portraits import build_two_person_library

pytestmark = pytest.mark.snakemake

PROMPTS = [
    "{trigger} {class_word}, professional headshot, studio grey backdrop",
    "{trigger} {class_word}, corporate portrait, navy blazer",
    "{trigger} {class_word}, business portrait, soft key light",
]


@pytest.mark.parametrize("best", [3, 2])
def test_the_workflow_picks_the_epoch_the_double_made_best(tmp_path: Path, best: int) -> None:
    build_two_person_library(tmp_path / "library", n_person=6, n_other=0)
    workdir = copy_workflow(tmp_path / "wf")
    train = double_config(workdir, max_train_epochs=5, headshot_prompts=PROMPTS, headshot_steps=2, headshot_size=256)
    write_config(
        workdir,
        tmp_path / "library",
        person="Grace Hopper",
        select={**KEEP_ALL, "max_identity_distance": "model"},
        caption={"class_word": "woman"},
        train=train,
    )
    env = {**double_env(), "LIKENESS_DOUBLE_BEST_EPOCH": str(best)}
    snakemake(workdir, "--cores", "2", env=env)

    record = json.loads((workdir / "results" / "lora" / "ohwx.json").read_text())
    print(f"\nchosen epoch {record['epoch']}: {record['why']}")
    for epoch, score in record["scores"].items():
        print(f"  epoch {epoch}: median {score['median']}  {[i['distance'] for i in score['images']]}")
    assert record["epoch"] == best
    # the base model the LoRA belongs to: the double's local file, whose hash no check remembered
    assert record["base_model"]["name"] == train["base_model"] and record["base_model"]["revision"] is None
    assert record["base_model"]["sha256"] is None and record["base_model"]["sha256_from"].startswith("not known")
    assert record["class_word"] == "woman" and record["prompts"][0].startswith("ohwx woman, professional headshot")
    assert set(record["scores"]) == {"1", "2", "3", "4", "5"}
    assert all(len(s["images"]) == 3 for s in record["scores"].values())
    # A headshot counts only with exactly one face; the strongest warps may lose it, and say so.
    notes = {i["note"] for s in record["scores"].values() for i in s["images"] if i["distance"] is None}
    assert notes <= {"no face found"}
    assert all(i["distance"] is not None for i in record["scores"][str(best)]["images"])
    medians = {int(e): s["median"] for e, s in record["scores"].items()}
    assert min(medians, key=medians.get) == best
    output = next((workdir / "results" / "train").glob("*/output"))
    chosen = output / (f"face-{best:06d}.safetensors" if best < 5 else "face.safetensors")
    assert (workdir / "results" / "lora" / "ohwx.safetensors").read_bytes() == chosen.read_bytes()

    # The run that finished the training drew its figures too: nothing is left to do, and the report
    # built next holds the loss curve, the samples and the headshot grid.
    assert "Nothing to be done" in snakemake(workdir, "-n", env=env).stdout
    snakemake(workdir, "--report", "report.html", env=env)
    report = (workdir / "report.html").read_text(encoding="utf-8", errors="replace")
    for figure in ("loss.svg", "samples.png", "headshots.png"):
        assert figure in report, figure
    # ... drawn from the finished run: its steps and sample rounds, not the "nothing yet" placeholders
    drawn = (workdir / "logs" / "report" / "training.log").read_text()
    assert re.search(r"loss chart: [1-9]\d* steps", drawn) and re.search(r"samples: [1-9]\d* rounds", drawn), drawn
    # The run folder's path as the workflow names it (relative to the working directory: run folders move).
    assert (workdir / record["source_lora"]).resolve() == chosen.resolve()

    # sdxl_gen_img.py was called once per saved epoch, with real option names only.
    known = gen_options()
    calls = read_jsonl(next((workdir / "results" / "headshots").glob("*/*/double_gen_invocations.jsonl")))
    assert len(calls) == 5
    for call in calls:
        assert {arg for arg in call["argv"] if arg.startswith("--")} <= known
        assert call["argv"][call["argv"].index("--ckpt") + 1] == train["base_model"]

    # Once trained, the next run adds the training's report figures, and renders no headshot again.
    snakemake(workdir, "--cores", "2", env=env)
    assert "Nothing to be done" in snakemake(workdir, "-n", env=env).stdout
    assert (workdir / "results" / "report" / "headshots.png").stat().st_size > 0  # the grid, epochs x prompts
    assert len(read_jsonl(next((workdir / "results" / "headshots").glob("*/*/double_gen_invocations.jsonl")))) == 5
