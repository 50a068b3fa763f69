# Figures for `snakemake --report report.html`: contact sheets, charts, the training estimate and,
# after training, the loss curve and the sample images. Cheap jobs that read the stages' tables.
# Paths of the caption and training stages: adjust here if those stages write elsewhere.
from likeness import report as lk_report

REPORT_CAPTIONS = "results/captions/captions.tsv"
REPORT_ESTIMATE = "results/train/estimate.json"
REPORT_TRAIN_LOG = "logs/train.log"
REPORT_TRAIN_DONE = "results/train/lora.safetensors"
REPORT_SAMPLES = "results/train/output/sample"


report: "../report/workflow.rst"


rule report_selection:
    input:
        manifest="results/dataset/manifest.tsv",
        excluded="results/dataset/excluded.tsv",
        # The sheets show the crop images: a re-cropped face re-draws them.
        records=crop_records(),
    output:
        selected=report(
            "results/report/selected.png",
            caption="../report/selected.rst",
            category="1. Training set",
            labels={"figure": "selected faces"},
        ),
        excluded=report(
            directory("results/report/excluded"),
            patterns=["excluded_{reason}.png"],
            caption="../report/excluded.rst",
            category="2. Excluded faces",
            labels={"reason": "{reason}"},
        ),
        reasons=report(
            "results/report/exclusion_reasons.svg",
            caption="../report/reasons.rst",
            category="2. Excluded faces",
            labels={"reason": "all reasons (chart)"},
        ),
    log:
        "logs/report/selection.log",
    run:
        lk_report.selected_sheet(input.manifest, output.selected)
        sheets = lk_report.excluded_sheets(input.excluded, output.excluded)
        counts = lk_report.reasons_chart(input.excluded, output.reasons)
        Path(log[0]).write_text(f"{len(sheets)} excluded sheet(s): {counts}\n")


rule report_tags:
    input:
        captions=REPORT_CAPTIONS,
    output:
        tags=report(
            "results/report/caption_tags.svg",
            caption="../report/tags.rst",
            category="3. Captions",
            labels={"figure": "most frequent tags"},
        ),
    run:
        lk_report.tags_chart(input.captions, output.tags, top=25)


rule report_estimate:
    input:
        estimate=REPORT_ESTIMATE,
    output:
        html=report(
            "results/report/estimate.html",
            caption="../report/estimate.rst",
            category="4. Training",
            labels={"figure": "estimate"},
        ),
    run:
        lk_report.estimate_html(input.estimate, output.html)


rule report_training:
    input:
        log=REPORT_TRAIN_LOG,
        done=REPORT_TRAIN_DONE,
    output:
        loss=report(
            "results/report/loss.svg",
            caption="../report/loss.rst",
            category="4. Training",
            labels={"figure": "loss curve"},
        ),
        samples=report(
            "results/report/samples.png",
            caption="../report/samples.rst",
            category="4. Training",
            labels={"figure": "samples by epoch"},
        ),
    params:
        sample_dir=REPORT_SAMPLES,
    run:
        lk_report.loss_chart(input.log, output.loss)
        lk_report.samples_sheet(params.sample_dir, output.samples)


# What `rule all` should list (the training figures only where training is part of the default run).
REPORT_BEFORE_TRAINING = [
    "results/report/selected.png",
    "results/report/excluded",
    "results/report/exclusion_reasons.svg",
    "results/report/caption_tags.svg",
]
REPORT_AFTER_TRAINING = ["results/report/loss.svg", "results/report/samples.png"]
