"""Report: the figures and tables for `snakemake --report`."""
