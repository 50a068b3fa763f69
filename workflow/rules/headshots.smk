# After training: headshots from every saved epoch's LoRA (sd-scripts' own sdxl_gen_img.py, on the GPU),
# then the epoch whose headshots look most like the selected faces becomes results/lora/<trigger>.
# Before a training has finished both jobs record that they are waiting and succeed.
from likeness.config import section_settings
from likeness.train import best_epoch as lk_best_epoch
from likeness.train import headshots as lk_headshots

BEST_LORA_JSON = f"results/lora/{lk_best_epoch.lora_stem(config['trigger'])}.json"


rule headshots:
    """Render the headshot prompts with every saved epoch's LoRA (waits, succeeding, until training is done)."""
    input:
        status=TRAIN_STATUS,
    output:
        status="results/headshots/status.json",
    log:
        "logs/headshots.log",
    conda:
        "../../envs/likeness.yaml"
    resources:
        gpu=1,
        runtime=TRAIN_DRY_RUN.headshots_runtime_minutes,
    params:
        settings=config["train"],
        trigger=config["trigger"],
        class_word=TRAIN_CLASS_WORD,
        # Kept by finished headshots (see likeness.train.headshots.readiness_param).
        ready=lk_headshots.readiness_param(
            SETTINGS.train, "results/headshots/status.json"
        ),
    script:
        "../scripts/headshots.py"


rule best_lora:
    """Score every epoch's headshots by identity distance to the selected faces; copy the best epoch's LoRA."""
    input:
        headshots="results/headshots/status.json",
        identity="results/dataset/identity.json",
    output:
        record=BEST_LORA_JSON,
    log:
        "logs/best_lora.log",
    params:
        select=config["select"],
        trigger=config["trigger"],
        class_word=TRAIN_CLASS_WORD,
    run:
        run_logged(
            log[0],
            lk_best_epoch.best_lora_stage,
            input.headshots,
            input.identity,
            section_settings("select", params.select),
            trigger=params.trigger,
            class_word=params.class_word,
            out_json=output.record,
        )
