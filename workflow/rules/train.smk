# SDXL LoRA training with kohya sd-scripts: the only expensive job. Its message shows the exact step
# count, time and cost in `snakemake -n`; the job itself checks for a usable GPU, the budget, the
# sd-scripts checkout and the base model. Without them it prepares a ready-to-launch run and exits 0
# (a submitted job, train.submit, fails instead: it cannot train where it runs).
# Every dataset or config trains into its own run folder (results/train/<hash>/); nothing is deleted.
# With profiles/slurm this is the one job submitted to the cluster (every other rule is local).
import time

from likeness.sdscripts import options as lk_sdscripts_options
from likeness.train import calibration as lk_train_calibration
from likeness.train import cluster as lk_train_cluster
from likeness.train import memory as lk_train_memory
from likeness.train import readiness as lk_train_readiness
from likeness.train import runplan as lk_runplan
from likeness.train import trainer_install as lk_trainer_install

# The dataset the training reads: the selected crops (select_faces' directory() output) and their
# <stem>.txt captions (caption_faces' directory() output).
TRAIN_IMAGES = "results/dataset/images"
TRAIN_CAPTIONS = "results/captions/text"
TRAIN_RUNS = "results/train"
TRAIN_STATUS = f"{TRAIN_RUNS}/status.json"
TRAIN_LOG = "logs/train.log"
TRAIN_CLASS_WORD = SETTINGS.train.class_word or SETTINGS.caption.class_word


try:
    # train.extra names sd-scripts options: checked against the release's option table (not the schema's).
    lk_sdscripts_options.validate_extra(SETTINGS.train.extra)
    TRAIN_READINESS = lk_train_readiness.readiness_param(SETTINGS.train, TRAIN_STATUS)
    TRAIN_ASSUMED_IMAGES = lk_runplan.expected_images(
        "results/dataset/manifest.tsv", SETTINGS.select.top_n, len(FACE_STEMS)
    )
    TRAIN_DRY_RUN = lk_runplan.dry_run(
        SETTINGS.train,
        TRAIN_IMAGES,
        max_images=lk_train_max_images(),
        runs_root=TRAIN_RUNS,
    )
    # train.mem_mb "auto": what the job needs in RAM (likeness.train.memory); sbatch --mem on a cluster.
    TRAIN_MEM_MB = lk_train_memory.job_memory_mb(SETTINGS.train, TRAIN_ASSUMED_IMAGES)
    # A run that stopped at 'ready' whose LoRA was copied back (trained on a rented GPU machine): the train
    # job runs once more (its readiness param changed) and records it as done; the report stages follow.
    TRAIN_FINISHED_ELSEWHERE = lk_train_calibration.finished_elsewhere(
        SETTINGS.train,
        TRAIN_STATUS,
        ["results/dataset/manifest.tsv", "results/captions/captions.tsv"],
    )
except LikenessError as error:
    fail(error)

# As it is now: a failed train job's clean-up removes the rule's status; onerror puts it back.
TRAIN_STATUS_AT_START = lk_train_cluster.StatusSnapshot.take(TRAIN_STATUS)
TRAIN_PARSED_AT = time.time()
# A submitted job's log is written on the node; an earlier run's is set aside meanwhile (onstart).
TRAIN_LOG_ASIDE = lk_train_cluster.LogAside(Path(TRAIN_LOG))
# ... and its progress is relayed from there to this console while it runs (onstart to the end).
TRAIN_PROGRESS = lk_train_cluster.ProgressRelay(TRAIN_LOG)


rule train:
    """Train (or resume) the SDXL LoRA in its versioned run folder, or prepare it and say what is missing."""
    input:
        **lk_runplan.declared_inputs(
            SETTINGS.train,
            "results/dataset/manifest.tsv",
            "results/captions/captions.tsv",
        ),
        # ancient(): every selection or caption run touches these folders; the tables above say
        # whether their contents changed.
        images=ancient(TRAIN_IMAGES),
        captions=ancient(TRAIN_CAPTIONS),
    output:
        status=TRAIN_STATUS,
    log:
        TRAIN_LOG,
    conda:
        "../../envs/likeness.yaml"
    resources:
        gpu=1,
        runtime=lk_train_runtime,
        mem_mb=TRAIN_MEM_MB,
        cpus_per_gpu=config["train"]["cpus_per_gpu"],
    params:
        settings=config["train"],
        trigger=config["trigger"],
        class_word=TRAIN_CLASS_WORD,
        # Changes only when a run that stopped at 'ready' can go on (a GPU, the checkout or the base
        # model appeared); a finished training stays finished.
        ready=TRAIN_READINESS,
    message:
        (
            "training: the LoRA files came back from another machine; this job records the run as done"
            " (no GPU needed)"
            if TRAIN_FINISHED_ELSEWHERE
            else TRAIN_DRY_RUN.message
        )
    script:
        "../scripts/train.py"


rule calibrate:
    """Time real training steps (10 warm-up, then 55) with the run's exact configs on this machine's GPU,
    into a throw-away folder, once sd-scripts and the base model are ready; store seconds per step and
    peak GPU memory in the calibration table and log the price before and after. Runs only when asked by
    name (`snakemake --cores 1 calibrate`); the train job then prices (and times out) by it.
    """
    input:
        **lk_runplan.declared_inputs(
            SETTINGS.train,
            "results/dataset/manifest.tsv",
            "results/captions/captions.tsv",
        ),
        images=ancient(TRAIN_IMAGES),
        captions=ancient(TRAIN_CAPTIONS),
    output:
        record=f"{TRAIN_RUNS}/calibrate.json",
    log:
        "logs/calibrate.log",
    conda:
        "../../envs/likeness.yaml"
    resources:
        gpu=1,
        # model loading, latent caching and 65 steps: half an hour covers the slowest card in the table
        runtime=30,
        mem_mb=TRAIN_MEM_MB,
        cpus_per_gpu=config["train"]["cpus_per_gpu"],
    params:
        settings=config["train"],
        trigger=config["trigger"],
        class_word=TRAIN_CLASS_WORD,
    script:
        "../scripts/calibrate.py"


rule install_trainer:
    """Install kohya sd-scripts v0.10.1 and its Python environment (torch for this machine's driver) under
    train.cache_dir. Runs only when asked by name; the train job installs it by itself right before a
    launch, so a run without a GPU never downloads anything heavy."""
    output:
        f"{config['train']['cache_dir']}/{lk_trainer_install.POINTER}",
    log:
        "logs/install_trainer.log",
    conda:
        "../../envs/likeness.yaml"
    params:
        # only what shapes the install, so that e.g. a new GPU price does not reinstall (the job's
        # settings hold None for the other keys)
        settings={
            key: config["train"][key]
            for key in ("sd_scripts", *lk_runplan.INSTALL_KEYS)
        },
    script:
        "../scripts/install_trainer.py"
