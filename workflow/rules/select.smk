# Choose the training set from all crops: filter, drop near-duplicates, rank, keep the best N.
# One job reads every crop record (cheap JSON) and writes the tables and the dataset images folder.
# update(): Snakemake would otherwise delete the tables before the job runs; the job rewrites a table
# only when its bytes change, and Snakemake's input checksums then keep later stages from re-running
# on an unchanged selection. The images folder is a directory(): Snakemake empties it before the job
# (its .snakemake_timestamp records when the job ran) and the job links the selected crops into it.
# selection.json records the key of what the selection followed: a dry run compares it with the key of the
# config and library now to know whether the training figures describe what will train (train.smk).
from likeness.select import freshness as lk_select_freshness

SELECTION_RECORD = "results/dataset/selection.json"
SELECTION_KEY = lk_select_freshness.inputs_key(
    config["select"],
    config["crop"],
    lk_crop.code_digest(),
    EXPORT_DIGEST,
    FACE_SPECS,
)
SELECTION_OUTPUTS = [
    "results/dataset/manifest.tsv",
    "results/dataset/excluded.tsv",
    "results/dataset/identity.json",
    "results/dataset/images",
]


rule select_faces:
    """Choose the training set from every face's crop: filter (each excluded face gets its first reason),
    drop near-duplicates and faces of other people, rank, keep select.top_n; write the manifest, the
    excluded faces, identity.json and the dataset images folder."""
    input:
        records=crop_records(),
        markers="results/export/markers.tsv",
        neighbours="results/export/neighbours.tsv",
    output:
        manifest=update("results/dataset/manifest.tsv"),
        excluded=update("results/dataset/excluded.tsv"),
        identity=update("results/dataset/identity.json"),
        images=directory("results/dataset/images"),
        selection=SELECTION_RECORD,
    log:
        "logs/select_faces.log",
    # New faces are embedded by the identity model in one process per thread.
    threads: workflow.cores
    params:
        settings=config["select"],
    run:
        run_logged(
            log[0],
            lk_select_job.select_faces,
            input,
            output,
            params.settings,
            threads,
            inputs_key=SELECTION_KEY,
        )
