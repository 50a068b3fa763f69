"""The train rule's script: prepare (or find) the versioned run folder, then train, resume or stop.

A separate process (not a `run:` job) so that Ctrl-C and SIGTERM reach sd-scripts through it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake

from likeness.errors import LikenessError
from likeness.train.training import train_stage

smk = snakemake  # noqa: F821
try:
    code = train_stage(
        smk.params.settings,
        smk.params.dataset,
        trigger=smk.params.trigger,
        class_word=smk.params.class_word,
        log_path=smk.log[0],
        status_path=smk.output.status,
        readiness=smk.params.ready,
    )
except LikenessError as error:
    print(f"likeness: {error}", file=sys.stderr)
    code = 1
sys.exit(code)
