# Helpers shared by every stage: config validation, the parse-time export, per-face parameters.
import sys

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


wildcard_constraints:
    stem=lk_names.STEM_PATTERN,


def crop_records(wildcards=None):
    """Every per-face crop record: what later stages read (a removed marker drops out here)."""
    return expand("results/crops/{stem}.json", stem=FACE_STEMS)


onstart:
    # A run killed while writing (SIGKILL, power loss) leaves hidden ".<name>.<random>.tmp" files
    # beside its outputs. onstart runs while this run holds the working directory's lock, so no
    # other writer can own a temporary file under results/ now.
    lk_atomic.remove_stale_temporaries("results")
    lk_train_onstart()


def lk_cluster_local_rules(workflow, config):
    """Every rule except those a cluster profile submits (train and calibrate, which need the GPU node;
    caption_faces with train.submit_caption)."""
    submitted = {"train", "calibrate"} | (
        {"caption_faces"} if config["train"]["submit_caption"] else set()
    )
    return [rule.name for rule in workflow.rules if rule.name not in submitted]
