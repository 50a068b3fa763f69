"""The headshots rule's script: render every saved epoch's headshots with sd-scripts' sdxl_gen_img.py.

A separate process (not a `run:` job) so that Ctrl-C and SIGTERM reach the generation script through it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake

from likeness.config import section_settings
from likeness.joblog import run_script
from likeness.train.headshots import headshots_stage

smk = snakemake  # noqa: F821
sys.exit(
    run_script(
        smk.log[0],
        headshots_stage,
        section_settings("train", smk.params.settings),
        smk.input.status,
        trigger=smk.params.trigger,
        class_word=smk.params.class_word,
        status_path=smk.output.status,
        readiness=smk.params.ready,
    )
)
