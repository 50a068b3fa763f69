# Caption every selected face: trigger word, class word, then the WD14 tagger's tags.
# One job for the whole set: the ONNX model is loaded once per run, and only faces whose crop has
# no stored probabilities (keyed by crop content and model) go through it. Changing a threshold or a
# tag list rewrites captions from the stored probabilities without running the model.


rule caption_faces:
    input:
        manifest="results/dataset/manifest.tsv",
    output:
        table=update("results/captions/captions.tsv"),
        stats="results/captions/stats.json",
    log:
        "logs/caption_faces.log",
    params:
        settings=config["caption"],
        trigger=config["trigger"],
    run:
        run_logged(
            log[0],
            lk_captions.run_captions_job,
            input.manifest,
            params.settings,
            params.trigger,
            output.table,
            output.stats,
        )
