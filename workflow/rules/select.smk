# Choose the training set from all crops: filter, drop near-duplicates, rank, keep the best N.
# One job reads every crop record (cheap JSON) and writes the manifests; results/dataset/images/ is
# synced file by file. update(): Snakemake would otherwise delete the manifests before the job runs,
# and an unchanged manifest must keep its mtime so later stages see nothing new.


rule select_faces:
    input:
        records=crop_records(),
        markers="results/export/markers.tsv",
        neighbours="results/export/neighbours.tsv",
    output:
        manifest=update("results/dataset/manifest.tsv"),
        excluded=update("results/dataset/excluded.tsv"),
        identity=update("results/dataset/identity.json"),
    log:
        "logs/select_faces.log",
    # New faces are embedded by the identity model in one process per thread.
    threads: workflow.cores
    params:
        settings=config["select"],
    run:
        # One line (the identity model missing, a bad reference folder), not a traceback.
        one_line_errors(
            log[0],
            lk_selection.run_selection_job,
            input.records,
            input.markers,
            input.neighbours,
            params.settings,
            log[0],
            workers=threads,
        )
