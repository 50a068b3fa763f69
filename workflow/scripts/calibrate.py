"""The calibrate rule's script: time real training steps with the run's configs on this machine's GPU.

A separate process (not a `run:` job) so that Ctrl-C and SIGTERM reach sd-scripts through it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake

from likeness.config import section_settings
from likeness.joblog import run_script
from likeness.train.calibrate import calibrate_stage

smk = snakemake  # noqa: F821
sys.exit(
    run_script(
        smk.log[0],
        calibrate_stage,
        section_settings("train", smk.params.settings),
        smk.input.images,
        smk.input.captions,
        trigger=smk.params.trigger,
        class_word=smk.params.class_word,
        runs_root=Path(smk.output.record).parent,  # the run folders sit beside the record
        out_json=smk.output.record,
    )
)
