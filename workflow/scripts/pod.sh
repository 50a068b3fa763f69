#!/usr/bin/env bash
# The GPU stage of a likeness bundle on a rented GPU machine (any Linux box with an NVIDIA GPU and Python 3.11):
#
#   tar xzf <run_id>.tar.gz && bash <run_id>/pod.sh
#
# It sets up the workflow's environment (workflow/scripts/setup.sh, as the README's set-up), then runs what
# needs the GPU: the training, the headshots of every saved epoch and the choice of the epoch that looks most
# like the person (results/lora/<trigger>.safetensors), with the headshot grid. No database and no originals
# are needed: the Snakefile reads the export that came with the bundle. Run the same command again after a
# restart or an interruption: it resumes from the newest saved epoch. When it is done it packs home.tar.gz
# beside this script; its last line prints the one command that unpacks it in the workflow's folder at home.
#
# Optional: a pod.yaml beside this script sets train keys for this machine only (likeness.train.pod: train.gpu,
# train.sd_scripts, train.launcher, train.python, train.gpu_hourly_cost, train.max_gpu_hours, ...); a key that
# would change the run id is refused. LIKENESS_VENV=/path/to/venv uses an existing environment instead of
# setting one up. The trainer and the base model are whatever the config names: the train job checks for them
# itself (and where the config lets the workflow install or download them, it does so on this machine).
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

started=$(date +%s)
configs=(config.yaml)
if [ -f pod.yaml ]; then
  # Before anything runs: a key that would change the run id trains another run than the one at home.
  PYTHONPATH=workflow "$venv/bin/python" -m likeness.train.pod check pod.yaml || exit 2
  configs+=(pod.yaml)
fi
# A machine restarted mid-run (or a SIGKILL) leaves Snakemake's lock behind; nothing else uses the folder.
"$venv/bin/snakemake" --unlock --configfile "${configs[@]}" >/dev/null 2>&1 || true
# Only the GPU stage runs here (train, headshots, best_lora and the headshot grid): the stages before it ran
# at home, and their results came with the bundle.
code=0
"$venv/bin/snakemake" --cores all --configfile "${configs[@]}" \
  --allowed-rules train headshots best_lora report_headshots -- best_lora report_headshots || code=$?

# The last line says what helps: the copy-back when done; resume only where running again can resume.
PYTHONPATH=workflow "$venv/bin/python" -m likeness.train.pod finish "$code" "$started"
