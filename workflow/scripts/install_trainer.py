"""The install_trainer rule's script: install sd-scripts and its environment under train.cache_dir.

A separate process, like train.py, so that Ctrl-C reaches git and pip; an interrupted install is redone
from scratch the next time (likeness.train.trainer_install).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake

from likeness.config import section_settings
from likeness.joblog import JobLog, run_script
from likeness.train import trainer_install


def install(values: dict, *, log: JobLog) -> int:
    cfg = section_settings("train", values)
    if cfg.sd_scripts != "auto":
        log(f"train.sd_scripts is {cfg.sd_scripts!r}, not 'auto': installing anyway into {cfg.cache_dir}")
    done = trainer_install.ensure_installed(cfg, log.file, log=log)
    log(f"{trainer_install.describe(done)} in {done.root}/")
    return 0


smk = snakemake  # noqa: F821
sys.exit(run_script(smk.log[0], install, smk.params.settings))
