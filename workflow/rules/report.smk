# Figures for `snakemake --report report.html`: contact sheets, charts, the training estimate and,
# after training, the loss curve and the sample images. Cheap jobs that read the stages' tables.
from likeness.report import report as lk_report


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
        poses=report(
            "results/report/head_poses.svg",
            caption="../report/poses.rst",
            category="1. Training set",
            labels={"figure": "head poses (chart)"},
        ),
    log:
        "logs/report/selection.log",
    run:
        lk_report.selection_figures(
            input.manifest,
            input.excluded,
            output.selected,
            output.excluded,
            output.reasons,
            log[0],
            output.poses,
        )


rule report_tags:
    input:
        captions="results/captions/captions.tsv",
    output:
        tags=report(
            "results/report/caption_tags.svg",
            caption="../report/tags.rst",
            category="3. Captions",
            labels={"figure": "most frequent tags"},
        ),
    log:
        "logs/report/tags.log",
    run:
        lk_report.tags_chart(input.captions, output.tags, top=25)


rule report_estimate:
    input:
        # The training job records its estimate (and whether it ran) in its status file.
        estimate="results/train/status.json",
    output:
        html=report(
            "results/report/estimate.html",
            caption="../report/estimate.rst",
            category="4. Training",
            labels={"figure": "estimate"},
        ),
    log:
        "logs/report/estimate.log",
    run:
        lk_report.estimate_html(input.estimate, output.html)


rule report_training:
    input:
        status="results/train/status.json",
        train_log="logs/train.log",
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
    log:
        "logs/report/training.log",
    run:
        lk_report.training_figures(
            input.status, input.train_log, output.loss, output.samples
        )


rule report_headshots:
    input:
        record=BEST_LORA_JSON,
    output:
        grid=report(
            "results/report/headshots.png",
            caption="../report/headshots.rst",
            category="5. Best epoch",
            labels={"figure": "headshots by epoch"},
        ),
    log:
        "logs/report/headshots.log",
    run:
        rows = lk_report.headshots_sheet(input.record, output.grid)
        Path(log[0]).write_text(f"{rows} epochs drawn\n")


# What `rule all` lists: the loss curve and samples once a training has finished.
REPORT_FIGURES = [
    "results/report/selected.png",
    "results/report/excluded",
    "results/report/exclusion_reasons.svg",
    "results/report/head_poses.svg",
    "results/report/caption_tags.svg",
    "results/report/estimate.html",
]
if lk_report.training_done("results/train/status.json") or TRAIN_FINISHED_ELSEWHERE:
    REPORT_FIGURES += [
        "results/report/loss.svg",
        "results/report/samples.png",
        "results/report/headshots.png",
    ]
