# What the database said: the person's markers (with the reason any is not used) and the other
# faces of the same files. Re-runs only when the data read at parse time changed.


rule export_markers:
    output:
        markers="results/export/markers.tsv",
        neighbours="results/export/neighbours.tsv",
    params:
        # A digest, not the rows: params are stored in plain text in .snakemake/metadata.
        digest=lk_sources.export_digest(EXPORT),
    log:
        "logs/export_markers.log",
    run:
        lk_sources.write_tables(EXPORT, output.markers, output.neighbours)
        Path(log[0]).write_text(lk_sources.export_summary(EXPORT) + "\n")
