# What the database said: the person's markers (with the reason any is not used) and the other
# faces of the same files. Re-runs only when the data read at parse time changed.


rule export_markers:
    """Write the person's face markers and the other faces of their files, as read while parsing."""
    output:
        markers=EXPORT_MARKERS,
        neighbours=EXPORT_NEIGHBOURS,
    log:
        "logs/export_markers.log",
    params:
        # A digest, not the rows: params are stored in plain text in .snakemake/metadata.
        digest=EXPORT_DIGEST,
    run:
        run_logged(
            log[0],
            lk_export_tsv.run_export_job,
            EXPORT,
            output.markers,
            output.neighbours,
        )
