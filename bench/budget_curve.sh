#!/usr/bin/env bash
# Issue 12's benchmark: the budget curve of one wsd run against separate runs of the budgets it stands for.
#
#   bench/budget_curve.sh DATA_DIR WORK_DIR [MINUTES] [run_mlm.py flags ...]
#
# On the prepared data DATA_DIR (prepare_data.py), with run_mlm.py's defaults, 4 layers x 256, batch 32, seed 1
# (the trailing flags are appended to every run_mlm.py command):
#   one       a wsd run of MINUTES (default 10) with markers 0.2, 0.4 and 0.6, cooled down by
#             `python -m budget_bert.cooldown` into the models of 0.25, 0.5 and 0.75 x MINUTES (cooldown 20%)
#   separate  wsd runs of 0.25, 0.5 and 0.75 x MINUTES: what the cooled-down models should match
#   linear    a linear-curve run of MINUTES: wsd against linear at the same budget
# The jobs run two at a time, one thread each, so that the load stays the same through the benchmark:
# (one, linear), then (the cooldowns, separate 0.75), then (separate 0.25, separate 0.5). At the end
# `python -m budget_bert.report WORK_DIR/one --separate_runs ...` evaluates every model on the same masked
# validation examples and writes WORK_DIR/one/report/report.md (the table) and budget_curve.png (the plot); each
# job's time and its disk use go to WORK_DIR/costs.txt. Jobs whose folder holds a finished run are skipped.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,4p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
DATA=$(realpath "$1")
WORK=$(realpath -m "$2")
MINUTES=${3:-10}
shift $(( $# >= 3 ? 3 : 2 ))
EXTRA=("$@")
mkdir -p "$WORK"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1

hours() { "$PYTHON" -c "print(repr($MINUTES * $1 / 60))"; }

# One job: NAME, the FOLDER it writes, then its command; its log is WORK/NAME.log, its seconds and the folder's disk
# use go to costs.txt.
job() {
  local name=$1 folder=$2; shift 2
  local start=$SECONDS
  "$@" >"$WORK/$name.log" 2>&1 || { echo "$name failed: see $WORK/$name.log" >&2; return 1; }
  echo "$name: $((SECONDS - start)) s, $(du -sh "$folder" | cut -f1) in $folder" >>"$WORK/costs.txt"
}

# A run_mlm.py run of SHARE x MINUTES into WORK/NAME (skipped when finished): NAME SHARE then extra flags.
pretrain() {
  local name=$1 share=$2; shift 2
  if [[ -f "$WORK/$name/finetune_snapshots/end/snapshot_info.json" ]]; then return 0; fi
  job "$name" "$WORK/$name" "$PYTHON" "$REPO/run_mlm.py" --dataset_path "$DATA" --output_dir "$WORK/$name" \
    --hidden_size 256 --num_hidden_layers 4 --num_attention_heads 4 --per_device_train_batch_size 32 \
    --total_training_time "$(hours "$share")" --seed 1 "$@" "${EXTRA[@]}"
}

# Two jobs side by side, each a command line in one word; fails when either fails.
pair() {
  eval "$1" & local first=$!
  eval "$2" & local second=$!
  wait $first && wait $second
}

pair "pretrain one 1 --curve wsd --finetune_time_markers 0.2,0.4,0.6" "pretrain linear 1 --curve linear"
pair 'job cooldown "$WORK/one/cooldown" "$PYTHON" -m budget_bert.cooldown "$WORK/one"' \
  "pretrain separate-0.75 0.75 --curve wsd"
pair "pretrain separate-0.25 0.25 --curve wsd" "pretrain separate-0.5 0.5 --curve wsd"
"$PYTHON" -m budget_bert.report "$WORK/one" --separate_runs "$WORK"/separate-*/ "$WORK/linear"
cat "$WORK/costs.txt"
echo "table: $WORK/one/report/report.md, plot: $WORK/one/report/budget_curve.png"
