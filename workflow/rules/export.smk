# What the database said: the person's markers (with the reason any is not used) and the other
# faces of the same files. Re-runs only when the data read at parse time changed.


rule export_markers:
    output:
        markers="results/export/markers.tsv",
        neighbours="results/export/neighbours.tsv",
    log:
        "logs/export_markers.log",
    params:
        # A digest, not the rows: params are stored in plain text in .snakemake/metadata.
        digest=lk_sources.export_digest(EXPORT),
    run:
        lk_sources.run_export_job(EXPORT, output.markers, output.neighbours, log[0])
