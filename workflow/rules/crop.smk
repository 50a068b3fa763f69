# One job per face. A `run:` job executes inside Snakemake (the profile sets force-use-threads),
# which costs ~15 ms a job instead of ~150 ms for a new Python process: more than the crop itself
# when the photo is small. The photo is the input, so replacing it re-crops only its faces; the box
# and the settings are params, so changing one marker re-crops only that face.


rule crop_face:
    """Crop one face from its photo; the record says how, or why it was excluded."""
    input:
        photo=lambda wc: lk_crop.photo_input(FACE_SPECS[wc.stem]),
    output:
        record="results/crops/{stem}.json",
    log:
        "logs/crop/{stem}.log",
    params:
        face=lambda wc: FACE_SPECS[wc.stem],
        # Where Snakemake cannot be given the photo's path as an input (see photo_input), its size and
        # modification time stand for it, so a replaced photo still re-crops its faces.
        photo_stat=lambda wc: lk_crop.photo_fingerprint(FACE_SPECS[wc.stem]),
        settings=vars(CROP_SETTINGS),
        code=lk_crop.code_digest(),
    run:
        lk_crop.run_job(params.face, CROP_SETTINGS, output.record, log[0])


rule crop_summary:
    input:
        records=crop_records(),
    output:
        table="results/crops/summary.tsv",
    log:
        "logs/crop_summary.log",
    run:
        line = lk_crop.write_summary(input.records, output.table)
        Path(log[0]).write_text(line + "\n")
        print(f"likeness: {line}")
