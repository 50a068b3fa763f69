# One job per face. A `run:` job executes inside Snakemake (the profile sets force-use-threads),
# which costs ~15 ms a job instead of ~150 ms for a new Python process: more than the crop itself
# when the photo is small. The photo is the input, so replacing it re-crops only its faces; the box
# and the settings are params, so changing one marker re-crops only that face.
from likeness.config import section_settings


rule crop_face:
    """Crop one face from its photo; the record says how, or why it was excluded (its image is then empty)."""
    input:
        photo=lambda wc: lk_crop_jobs.photo_input(FACE_SPECS[wc.stem]),
    output:
        record="results/crops/{stem}.json",
        image=f"results/crops/{{stem}}.{config['crop']['format']}",
    log:
        "logs/crop/{stem}.log",
    params:
        face=lambda wc: FACE_SPECS[wc.stem],
        # Where Snakemake cannot be given the photo's path as an input (see photo_input), its size and
        # modification time stand for it, so a replaced photo still re-crops its faces.
        photo_stat=lambda wc: lk_crop_jobs.photo_fingerprint(FACE_SPECS[wc.stem]),
        settings=config["crop"],
        code=lk_crop.code_digest(),
    run:
        run_logged(
            log[0],
            lk_crop_jobs.crop_job,
            params.face,
            section_settings("crop", params.settings),
            output.image,
            output.record,
        )


rule crop_summary:
    """Tabulate every face's crop record: cropped, or excluded with the reason; the export's markers.tsv
    (where the faces that got no crop job keep their reasons) is made with it."""
    input:
        records=crop_records(),
        markers=EXPORT_MARKERS,
    output:
        table="results/crops/summary.tsv",
    log:
        "logs/crop_summary.log",
    run:
        run_logged(
            log[0],
            lk_crop_jobs.summary_job,
            input.records,
            output.table,
            markers=input.markers,
        )
