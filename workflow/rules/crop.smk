# One job per face. A `run:` job executes inside Snakemake (the profile sets force-use-threads),
# which costs ~15 ms a job instead of ~150 ms for a new Python process: more than the crop itself
# when the photo is small. The photo is the input, so replacing it re-crops only its faces; the box
# and the settings are params, so changing one marker re-crops only that face.


rule crop_face:
    input:
        photo=lambda wc: (
            [FACE_SPECS[wc.uid]["path"]] if FACE_SPECS[wc.uid]["path"] else []
        ),
    output:
        record="results/crops/{uid}.json",
    log:
        "logs/crop/{uid}.log",
    params:
        face=lambda wc: FACE_SPECS[wc.uid],
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
