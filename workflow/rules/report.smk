# Figures for `snakemake --report report.html`: contact sheets, charts, the training estimate and,
# after training, the loss curve and the sample images. Cheap jobs that read the stages' tables.
from likeness.report import dataset as lk_report_dataset
from likeness.report import estimate_page as lk_estimate_page
from likeness.report import summary_page as lk_summary_page
from likeness.report import training_figures as lk_training_figures

# The report opens on its intro: the report_summary job's rendering of workflow/report/workflow.rst (the
# photo manager named, the run's facts added) once it has run, the template as it is before.
REPORT_INTRO = "results/report/intro.rst"
# The photo manager the export came from, by its own name (PhotoPrism, Immich, digiKam), for captions.
REPORT_SOURCE = lk_summary_page.source_name(EXPORT.manager, SETTINGS.source.kind)
REPORT_INTRO_TEMPLATE = str(
    Path(workflow.basedir) / "workflow" / "report" / "workflow.rst"
)
REPORT_TEXT = (
    str(Path(REPORT_INTRO).resolve())
    if Path(REPORT_INTRO).is_file()
    else "../report/workflow.rst"
)


report: REPORT_TEXT


rule report_summary:
    """The report's first page: person, source, faces kept and excluded by reason, the training's state and
    estimated cost, the chosen epoch and its identity distance; every selected face's score parts.
    """
    input:
        manifest="results/dataset/manifest.tsv",
        excluded="results/dataset/excluded.tsv",
        status=TRAIN_STATUS,
        record=BEST_LORA_JSON,
        template=REPORT_INTRO_TEMPLATE,
    output:
        summary=report(
            "results/report/summary.html",
            caption="../report/summary.rst",
            category="0. Summary",
            labels={"figure": "this run"},
        ),
        scores=report(
            "results/report/selected_scores.html",
            caption="../report/scores.rst",
            category="1. Training set",
            labels={"figure": "selected faces (score parts)"},
        ),
        intro=REPORT_INTRO,
    log:
        "logs/report/summary.log",
    params:
        # Who and where from, as the export found them (the manager's name, not an assumed PhotoPrism).
        person=EXPORT.subject.name or SETTINGS.person,
        source=REPORT_SOURCE,
        train=config["train"],
    run:
        run_logged(
            log[0],
            lk_summary_page.summary_job,
            input.manifest,
            input.excluded,
            input.status,
            input.record,
            input.template,
            output.summary,
            output.scores,
            output.intro,
            person=params.person,
            source=params.source,
            train=params.train,
        )


rule report_selection:
    """Contact sheets of the selected faces (rank order) and of the excluded ones (one per reason),
    and bar charts of the exclusion reasons and the training set's head poses."""
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
    params:
        # For the caption: the manager whose marker uids the sheet shows.
        source=REPORT_SOURCE,
    run:
        run_logged(
            log[0],
            lk_report_dataset.selection_figures,
            input.manifest,
            input.excluded,
            output.selected,
            output.excluded,
            output.reasons,
            output.poses,
        )


rule report_tags:
    """Bar chart of the most frequent caption tags; it says so when the stand-in tagger made them."""
    input:
        captions="results/captions/captions.tsv",
        # The caption job's stats name the tagger model (the offline stand-in's tags mean nothing).
        stats="results/captions/stats.json",
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
        run_logged(
            log[0],
            lk_report_dataset.tags_job,
            input.captions,
            input.stats,
            output.tags,
            25,
        )


rule report_estimate:
    """The training estimate as a table: steps, time, cost in train.currency, each overhead and
    whether it fits train.max_gpu_hours."""
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
    params:
        train=config["train"],
    run:
        run_logged(
            log[0],
            lk_estimate_page.estimate_job,
            input.estimate,
            output.html,
            params.train,
        )


rule report_training:
    """Loss and learning rate by step from sd-scripts' TensorBoard event files in the run folder,
    and the sample images by epoch."""
    input:
        # The status file names the run folder, whose event files and samples the figures show.
        status="results/train/status.json",
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
        run_logged(
            log[0],
            lk_training_figures.training_figures,
            input.status,
            output.loss,
            output.samples,
        )


rule report_headshots:
    """Grid of the headshots of every saved epoch with their identity distances; the chosen epoch marked."""
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
        run_logged(log[0], lk_training_figures.headshots_job, input.record, output.grid)


# What `rule all` lists: every figure, always. Before a training has finished the loss chart, samples and
# headshot grid say that there is nothing yet; they follow status.json and the best-epoch record, so the
# run that finishes the training draws them too (nothing is decided from status.json while parsing).
REPORT_FIGURES = [
    "results/report/summary.html",
    "results/report/selected_scores.html",
    "results/report/intro.rst",
    "results/report/selected.png",
    "results/report/excluded",
    "results/report/exclusion_reasons.svg",
    "results/report/head_poses.svg",
    "results/report/caption_tags.svg",
    "results/report/estimate.html",
    "results/report/loss.svg",
    "results/report/samples.png",
    "results/report/headshots.png",
]
