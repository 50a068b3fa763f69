#!/usr/bin/env bash
# Train a likeness bundle on a rented GPU machine (any Linux box with an NVIDIA GPU and Python 3.11):
#
#   tar xzf <run_id>.tar.gz && bash <run_id>/pod.sh
#
# It sets up the workflow's environment (workflow/scripts/setup.sh, as the README's set-up), then runs the
# training stage from the bundle: no database and no originals are needed, the Snakefile reads the export
# that came with it. Run the same command again after a restart or an interruption: it resumes from the
# newest saved epoch. The LoRA files and samples end up in results/train/<run_id>/output/; copy that folder
# back into the same run folder at home and run the workflow there again.
#
# Optional: a pod.yaml beside this script overrides train settings for this machine only (train.gpu,
# train.sd_scripts, train.launcher, train.python, train.gpu_hourly_cost, train.max_gpu_hours);
# LIKENESS_VENV=/path/to/venv uses an existing environment instead of setting one up.
# The trainer and the base model are whatever the config names: the train job checks for them itself
# (and where the config lets the workflow install or download them, it does so on this machine, at launch).
set -euo pipefail
cd "$(dirname "$0")"

# One pod.sh at a time in this folder: so the Snakemake lock a killed run left can be removed safely.
# Its processes inherit the lock; the wait lets those of a run killed a moment ago finish dying.
exec 9>>.pod.lock
if ! flock -w 60 9; then
  echo "pod.sh: another pod.sh is running in $(pwd)" >&2
  exit 1
fi

if [ -n "${LIKENESS_VENV:-}" ]; then
  venv=$LIKENESS_VENV
else
  bash workflow/scripts/setup.sh
  venv=.venv
fi

configs=(config.yaml)
[ -f pod.yaml ] && configs+=(pod.yaml)
# A machine restarted mid-run (or a SIGKILL) leaves Snakemake's lock behind; nothing else uses the folder.
"$venv/bin/snakemake" --unlock --configfile "${configs[@]}" >/dev/null 2>&1 || true
# Only the training runs here: the stages before it ran at home, and their results came with the bundle.
code=0
"$venv/bin/snakemake" --cores all --configfile "${configs[@]}" --allowed-rules train -- train || code=$?

"$venv/bin/python" - "$code" <<'PY'
import json, sys
from pathlib import Path

code = int(sys.argv[1])
try:
    status = json.loads(Path("results/train/status.json").read_text())
except (OSError, ValueError):
    status = {}
if code == 0 and status.get("state") == "done":
    print(f"pod.sh: training done; LoRA files and samples in {status['run_dir']}/output/ "
          f"(copy that folder into {status['run_dir']}/output/ at home)")
    sys.exit(0)
if status.get("state") == "ready":
    print("pod.sh: the training cannot start here: " + "; ".join(status.get("missing", [])), file=sys.stderr)
else:
    print(f"pod.sh: the training stopped (exit code {code}); run `bash pod.sh` again to resume", file=sys.stderr)
sys.exit(code or 1)
PY
