# likeness: from PhotoPrism's face markers to a personal SDXL LoRA.
#
#   snakemake --cores 2          build what is stale (profiles/default/ sets the defaults)
#   snakemake -n                 list every job, with the training estimate
#
# The job list is complete at parse time: workflow/rules/common.smk asks PhotoPrism's database for
# the person's markers while this file is read, so a dry run shows every per-face job.


import sys

from snakemake.utils import min_version

# An older Snakemake stops here with a clear message (pyproject pins 9.27.1, which the tests run).
min_version("9.27")


# Snakemake's own message for a YAML slip names neither the file nor the line: check it first.
sys.path.insert(0, f"{workflow.basedir}/workflow")
from likeness.config import check_yaml_syntax
from likeness.errors import LikenessError

try:
    check_yaml_syntax("config.yaml")
except LikenessError as error:
    sys.exit(f"likeness: {error}")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/crop.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/caption.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/headshots.smk"
include: "workflow/rules/bundle.smk"
include: "workflow/rules/report.smk"


rule all:
    """Everything: export, crops, training set, captions, the training (or its prepared run), the best
    epoch's LoRA and the report's figures."""
    default_target: True
    input:
        "results/export/markers.tsv",
        "results/crops/summary.tsv",
        "results/dataset/manifest.tsv",
        "results/captions/captions.tsv",
        "results/train/status.json",
        BEST_LORA_JSON,
        REPORT_FIGURES,


# On a cluster (profiles/slurm) only the training is submitted (and the captioning, with
# train.submit_caption): every other job is quick, per face, or reads the originals, and runs where
# Snakemake runs.
workflow.localrules(*lk_cluster_local_rules(workflow, config))
