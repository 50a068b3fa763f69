# `snakemake bundle`: the training stage packed for a rented GPU machine (likeness.train.bundle). Not part of
# the default target: it runs when asked by name.


rule bundle:
    """Pack the prepared training run with the workflow, export, dataset and pod.sh into a tarball."""
    input:
        status="results/train/status.json",
    output:
        record="results/train/bundle.json",
    log:
        "logs/bundle.log",
    run:
        run_logged(
            log[0],
            lk_bundle.write_bundle,
            config,
            input.status,
            workflow.basedir,
            output.record,
        )
