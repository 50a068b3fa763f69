# SDXL LoRA training with kohya sd-scripts: the only expensive job. Its message shows the exact step
# count, time and cost in `snakemake -n`; the job itself checks for a usable GPU, the budget, the
# sd-scripts checkout and the base model. Without them it prepares a ready-to-launch run and exits 0.
# Every dataset or config trains into its own run folder (results/train/<hash>/); nothing is deleted.
# With profiles/slurm this is the one job submitted to the cluster (every other rule is local).
from likeness.train import trainer_install as lk_trainer_install


rule train:
    """Train (or resume) the SDXL LoRA in its versioned run folder, or prepare it and say what is missing."""
    input:
        **lk_training.declared_inputs(
            config["train"],
            "results/dataset/manifest.tsv",
            "results/captions/captions.tsv",
        ),
    output:
        status="results/train/status.json",
    log:
        "logs/train.log",
    conda:
        "../../envs/likeness.yaml"
    resources:
        gpu=1,
        runtime=TRAIN_DRY_RUN.runtime_minutes,
        mem_mb=config["train"]["mem_mb"],
        cpus_per_gpu=config["train"]["cpus_per_gpu"],
    params:
        settings=config["train"],
        dataset=TRAIN_DATASET,
        trigger=config["trigger"],
        class_word=TRAIN_CLASS_WORD,
        # Changes only when a run that stopped at 'ready' can go on (a GPU, the checkout or the base
        # model appeared); a finished training stays finished.
        ready=TRAIN_READINESS,
    message:
        TRAIN_DRY_RUN.message
    script:
        "../scripts/train.py"


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
        # only what shapes the install, so that e.g. a new GPU price does not reinstall
        settings={
            key: config["train"][key]
            for key in ("sd_scripts", *lk_training.INSTALL_KEYS)
        },
    script:
        "../scripts/install_trainer.py"
