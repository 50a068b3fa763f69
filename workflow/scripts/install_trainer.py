"""The install_trainer rule's script: install sd-scripts and its environment under train.cache_dir.

A separate process, like train.py, so that Ctrl-C reaches git and pip; an interrupted install is redone
from scratch the next time (likeness.train.trainer_install).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake

from likeness.errors import LikenessError
from likeness.train import trainer_install
from likeness.train.training import train_config

smk = snakemake  # noqa: F821
try:
    cfg = train_config(smk.params.settings)
    if cfg["sd_scripts"] != "auto":
        print(
            f"likeness: train.sd_scripts is {cfg['sd_scripts']!r}, not 'auto': "
            f"installing anyway into {cfg['cache_dir']}"
        )
    install = trainer_install.ensure_installed(cfg, smk.log[0], log=lambda line: print(f"likeness: {line}", flush=True))
    print(f"likeness: {trainer_install.describe(install)} in {install.root}/")
    code = 0
except LikenessError as error:
    print(f"likeness: {error}", file=sys.stderr)
    code = 1
sys.exit(code)
