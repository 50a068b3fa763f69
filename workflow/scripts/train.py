"""The train rule's script: prepare (or find) the versioned run folder, then train, resume or stop.

A separate process (not a `run:` job) so that Ctrl-C and SIGTERM reach sd-scripts through it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake

from likeness.config import section_settings
from likeness.joblog import run_script
from likeness.train.launch import train_stage

smk = snakemake  # noqa: F821
sys.exit(
    run_script(
        smk.log[0],
        train_stage,
        section_settings("train", smk.params.settings),
        smk.input.images,
        smk.input.captions,
        trigger=smk.params.trigger,
        class_word=smk.params.class_word,
        status_path=smk.output.status,
        runs_root=Path(smk.output.status).parent,  # the run folders sit beside the rule's status
        readiness=smk.params.ready,
    )
)
