# Helpers shared by every stage: config validation, the parse-time export, per-face parameters.
import atexit
import os
import sys
import time

from snakemake.exceptions import WorkflowError
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from likeness import atomic as lk_atomic
from likeness.train import bundle as lk_bundle
from likeness.caption import captions as lk_captions
from likeness.crop import cropping as lk_crop
from likeness.crop import jobs as lk_crop_jobs
from likeness import names as lk_names
from likeness.select import job as lk_select_job
from likeness.export import photos as lk_photos
from likeness.export import sourceapi as lk_sourceapi
from likeness.export import tsv as lk_export_tsv
from likeness import tables as lk_tables
from likeness.config import validate_config
from likeness.joblog import run_logged
from likeness.errors import LikenessError
from likeness import summary as lk_summary


def fail(error):
    """Stop with one line, not a traceback: the message names the config key or the problem."""
    sys.exit(f"likeness: {error}")


EXPORT_MARKERS = "results/export/markers.tsv"
EXPORT_NEIGHBOURS = "results/export/neighbours.tsv"
# A job running on another machine (a Slurm node: Snakemake parses this file again there) or a training
# bundle unpacked on a rented GPU machine has neither the database nor the originals: it reads the
# export the main process wrote instead of asking the database again.
FROM_EXPORT = workflow.remote_exec or lk_bundle.is_bundle(".")

try:
    SETTINGS = validate_config(config, workflow.config_settings.overwrite_config)
    if FROM_EXPORT:
        EXPORT = lk_export_tsv.read_tables(
            EXPORT_MARKERS, EXPORT_NEIGHBOURS, SETTINGS.person
        )
        print(
            f"likeness: no database here: the job list comes from {Path(EXPORT_MARKERS).parent}/",
            file=sys.stderr,
        )
    else:
        # The job list comes from one quick read-only query while the Snakefile is parsed, so that
        # `snakemake -n` shows every job (a checkpoint would hide everything behind it).
        # PhotoPrism, Immich or digiKam (source.kind, or what the tables show): the same records.
        EXPORT = lk_sourceapi.read_export(SETTINGS.source, SETTINGS.person)
except LikenessError as error:
    fail(error)

# Resolved now, while the database's answer is at hand, so that markers.tsv records each face's photo
# and any reason it cannot be read (read back from there on a machine without the originals).
if not FROM_EXPORT:
    lk_photos.locate_photos(EXPORT, lk_photos.roots(EXPORT))
# Each face's crop parameters, keyed by its file stem (likeness.names).
FACE_SPECS = {
    marker.stem: lk_crop_jobs.spec_for(marker, EXPORT.manager)
    for marker in EXPORT.croppable
}
FACE_STEMS = sorted(FACE_SPECS)
# The export rule's param and part of the selection's key: taken once a parse (it serialises every row).
EXPORT_DIGEST = lk_export_tsv.export_digest(EXPORT)


wildcard_constraints:
    stem=lk_names.STEM_PATTERN,


# The rules with one job per face: their per-job blocks are quieted on the console (below).
PER_FACE_RULES = ("crop_face",)


def crop_records(wildcards=None):
    """Every per-face crop record: what later stages read (a removed marker drops out here)."""
    return expand("results/crops/{stem}.json", stem=FACE_STEMS)


# The command this run was started with (profile and all), for every hint a job prints: the train and
# headshot jobs read it from the environment (a Slurm job inherits it with the submitting environment).
LK_COMMAND = lk_summary.invoked_command()
if not workflow.remote_exec:
    os.environ.update({lk_summary.COMMAND_VARIABLE: LK_COMMAND})
    # In a run and in a dry run, a job block names at most 8 files of a kind on the console (the jobs that
    # read every face's record would print one line of all of them); the log file keeps the whole lists.
    lk_summary.shorten_console_file_lists()
# How this run ends, for the closing summary (set by onstart, onsuccess and onerror below).
LK_RUN = {"started": False, "started_at": None, "outcome": "", "failed": []}


# The training's parts of the hooks below; the TRAIN_* names come from train.smk.
def lk_train_onstart():
    """The training's part of onstart: with train.submit, the earlier log out of the way."""
    if SETTINGS.train.submit and not workflow.remote_exec:
        TRAIN_LOG_ASIDE.set_aside()
        TRAIN_PROGRESS.start()


def lk_train_onsuccess():
    """The training's part of onsuccess: the earlier log back, unless a job wrote a new one."""
    if not workflow.remote_exec:
        TRAIN_PROGRESS.stop()
        TRAIN_LOG_ASIDE.put_back()


def lk_train_onerror(snakemake_log):
    """The training's part of onerror, where Snakemake was started (a login node): the status
    restored, and why a submitted job failed or was refused, with the key to set (likeness.train.cluster).
    """
    if workflow.remote_exec:
        return
    TRAIN_PROGRESS.stop()
    for line in lk_train_cluster.report_failure(
        TRAIN_STATUS_AT_START, snakemake_log, TRAIN_LOG, TRAIN_PARSED_AT, TRAIN_MEM_MB
    ):
        print(line, file=sys.stderr)
    TRAIN_LOG_ASIDE.put_back()


onstart:
    # A run killed while writing (SIGKILL, power loss) leaves hidden ".<name>.<random>.tmp" files
    # beside its outputs. onstart runs while this run holds the working directory's lock, so no
    # other writer can own a temporary file under results/ now.
    lk_atomic.remove_stale_temporaries("results")
    lk_train_onstart()
    LK_RUN.update(started=True, started_at=time.time())
    # A run prints two lines per face job: the job's own and Snakemake's progress count. Here, because a dry
    # run (whose job list is what it is for) never calls onstart, and the parse cannot tell the two apart.
    # The crop jobs' rule blocks and every "Finished jobid" block stay in Snakemake's log file under
    # .snakemake/log/; --verbose brings them back to the console.
    if not workflow.output_settings.verbose:
        lk_summary.quiet_per_job_lines(PER_FACE_RULES)


onsuccess:
    LK_RUN.update(outcome="success")
    lk_train_onsuccess()


onerror:
    LK_RUN.update(outcome="error", failed=lk_failed_jobs())
    # A failed training job (a refused sbatch call, a node without a GPU): its reason on this console, and
    # results/train/status.json as it was before the run (likeness.train.cluster).
    lk_train_onerror(log)


def lk_cluster_local_rules(workflow, config):
    """Every rule except those a cluster profile submits (train and calibrate, which need the GPU node;
    caption_faces with train.submit_caption)."""
    submitted = {"train", "calibrate"} | (
        {"caption_faces"} if config["train"]["submit_caption"] else set()
    )
    return [rule.name for rule in workflow.rules if rule.name not in submitted]


# The training figures' freshness (SELECTION_* in select.smk, the train rule's runtime in train.smk).
def lk_selection_is_current():
    """Whether the selection on disk is what it would choose now (no selection job to run first)."""
    return lk_select_freshness.is_current(
        SELECTION_RECORD, SELECTION_KEY, SELECTION_OUTPUTS
    )


def lk_train_max_images():
    """None when the selection on disk is what will train (exact figures), else the most images the
    selection that runs first can keep (the figures are then an upper bound)."""
    if lk_selection_is_current():
        return None
    return lk_runplan.most_images(SETTINGS.select.top_n, len(FACE_STEMS))


def lk_train_runtime(wildcards, input):
    """The train job's time limit (Slurm's -t) in minutes. Snakemake evaluates it again once the job's
    inputs are up to date, right before it is scheduled: by then the selection has run and the count is
    exact (the parse-time figure may be an upper bound)."""
    return lk_runplan.dry_run(
        SETTINGS.train,
        input.images,
        max_images=lk_train_max_images(),
        runs_root=TRAIN_RUNS,
    ).runtime_minutes


def lk_failed_jobs():
    """(rule, log files) of each job that failed in this run: the scheduler's record (Snakemake 9.27)."""
    failed = getattr(workflow.scheduler, "failed", None) or ()
    return sorted(
        {(job.rule.name, tuple(str(path) for path in job.log)) for job in failed}
    )


def lk_print_last():
    """At exit, after all Snakemake prints: a dry run's training state and price, a run's closing summary."""
    lines = []
    if workflow.remote_exec:
        return
    if workflow.dryrun:
        lines = lk_summary.dry_run_footer(TRAIN_STATUS, TRAIN_DRY_RUN.lines)
    elif LK_RUN["started"]:
        lines = lk_summary.closing_summary(
            outcome=LK_RUN["outcome"] or "error",
            command=LK_COMMAND,
            manifest="results/dataset/manifest.tsv",
            excluded="results/dataset/excluded.tsv",
            status_path=TRAIN_STATUS,
            best_lora_json=BEST_LORA_JSON,
            failed=LK_RUN["failed"],
            started_at=LK_RUN["started_at"],
        )
    if lines:
        sys.stderr.flush()
        print(
            "\n".join(lines),
            file=sys.stdout if workflow.dryrun else sys.stderr,
            flush=True,
        )


atexit.register(lk_print_last)
