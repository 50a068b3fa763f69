# SDXL LoRA training with kohya sd-scripts: the only expensive job. Its message shows the exact step
# count, time and cost in `snakemake -n`; the job itself checks for a usable GPU, the budget, the
# sd-scripts checkout and the base model. Without them it prepares a ready-to-launch run and exits 0.
# Every dataset or config trains into its own run folder (results/train/<hash>/); nothing is deleted.


rule train:
    input:
        manifest="results/dataset/manifest.tsv",
        captions="results/captions/captions.tsv",
    output:
        status="results/train/status.json",
    log:
        "logs/train.log",
    conda:
        "../../envs/likeness.yaml"
    resources:
        gpu=1,
        runtime=TRAIN_DRY_RUN.runtime_minutes,
    params:
        settings=config["train"],
        dataset=TRAIN_DATASET,
        trigger=config["trigger"],
        class_word=TRAIN_CLASS_WORD,
        # Changes when a GPU, the checkout or the base model appear, so a 'ready' run is launched.
        ready=lk_training.launch_readiness(config["train"]),
    message:
        TRAIN_DRY_RUN.message
    script:
        "../scripts/train.py"
