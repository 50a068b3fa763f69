# Caption every selected face: trigger word, class word, then the WD14 tagger's tags.
# One job for the whole set: the ONNX model is loaded once per run, and only faces whose crop has
# no stored probabilities (keyed by crop content and model) go through it. Changing a threshold or a
# tag list rewrites captions from the stored probabilities without running the model.
# update(): Snakemake would otherwise delete the table and the caption files before the job runs; a
# caption whose bytes are unchanged keeps its mtime, so the training is not started again for nothing.
# The caption folder's own mtime (.snakemake_timestamp) changes with every run: a rule that reads it
# should take its changes from captions.tsv, which holds every caption's text.
from likeness.config import section_settings


rule caption_faces:
    """Caption the selected faces with the WD14 tagger: results/captions/text/<stem>.txt and captions.tsv."""
    input:
        manifest="results/dataset/manifest.tsv",
        # ancient(): the folder's mtime changes with every selection run; the manifest carries what changed.
        images=ancient("results/dataset/images"),
    output:
        table=update("results/captions/captions.tsv"),
        text=update(directory("results/captions/text")),
        stats="results/captions/stats.json",
    log:
        "logs/caption_faces.log",
    params:
        settings=config["caption"],
        trigger=config["trigger"],
    run:
        run_logged(
            log[0],
            lk_captions.caption_faces,
            input.manifest,
            input.images,
            section_settings("caption", params.settings),
            params.trigger,
            output.text,
            output.table,
            output.stats,
        )
