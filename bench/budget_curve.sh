#!/usr/bin/env bash
# Issue 12's benchmark: the budget curve of one wsd run against separate runs of the budgets it stands for.
#
#   bench/budget_curve.sh DATA_DIR WORK_DIR [MINUTES] [run_mlm.py flags ...]
#   SEEDS="4 5" bench/budget_curve.sh DATA_DIR WORK_DIR [MINUTES] [run_mlm.py flags ...]   # two seeds in lockstep
#
# On the prepared data DATA_DIR (prepare_data.py), with run_mlm.py's defaults, 4 layers x 256, batch 32, seed 1
# (the trailing flags are appended to every run_mlm.py command):
#   one       a wsd run of MINUTES (default 10) with markers 0.2, 0.4 and 0.6, cooled down by
#             `python -m budget_bert.cooldown` into the models of 0.25, 0.5 and 0.75 x MINUTES (cooldown 20%)
#   separate  wsd runs of 0.25, 0.5 and 0.75 x MINUTES: what the cooled-down models should match
#   linear    a linear-curve run of MINUTES: wsd against linear at the same budget
# The jobs run two at a time, one thread each. With one seed: (one, linear), then (the cooldowns, separate 0.75),
# then (separate 0.25, separate 0.5); a pair's shorter job ends first, and the longer one runs alone for the rest.
# With SEEDS="A B" the two seeds run in lockstep, into WORK_DIR/seed-A and WORK_DIR/seed-B: each job of one seed
# beside the same job of the other, so that every job has a neighbour of the same length and load from its start to
# its end. At the end `python -m budget_bert.report WORK/one --separate_runs ...` evaluates every model of a seed on
# the same masked validation examples and writes WORK/one/report/report.md (the table) and budget_curve.png (the
# plot); each job's time and its disk use go to WORK/costs.txt. Jobs whose folder holds a finished run are skipped.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
DATA=$(realpath "$1")
WORK=$(realpath -m "$2")
MINUTES=${3:-10}
shift $(( $# >= 3 ? 3 : 2 ))
EXTRA=("$@")
read -r -a SEED_LIST <<<"${SEEDS:-}"
if (( ${#SEED_LIST[@]} != 0 && ${#SEED_LIST[@]} != 2 )); then
  echo "SEEDS=\"${SEEDS}\": give two seeds (they run in lockstep), or leave SEEDS unset for seed 1 alone" >&2
  exit 2
fi
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1

hours() { "$PYTHON" -c "print(repr($MINUTES * $1 / 60))"; }

# One job: ROOT (a seed's folder), NAME, the FOLDER it writes, then its command; its log is ROOT/NAME.log, its
# seconds and the folder's disk use go to ROOT/costs.txt.
job() {
  local root=$1 name=$2 folder=$3; shift 3
  local start=$SECONDS
  "$@" >"$root/$name.log" 2>&1 || { echo "$name failed: see $root/$name.log" >&2; return 1; }
  echo "$name: $((SECONDS - start)) s, $(du -sh "$folder" | cut -f1) in $folder" >>"$root/costs.txt"
}

# A run_mlm.py run of SHARE x MINUTES into ROOT/NAME (skipped when finished): ROOT SEED NAME SHARE then extra flags.
pretrain() {
  local root=$1 seed=$2 name=$3 share=$4; shift 4
  if [[ -f "$root/$name/finetune_snapshots/end/snapshot_info.json" ]]; then return 0; fi
  job "$root" "$name" "$root/$name" "$PYTHON" "$REPO/run_mlm.py" --dataset_path "$DATA" --output_dir "$root/$name" \
    --hidden_size 256 --num_hidden_layers 4 --num_attention_heads 4 --per_device_train_batch_size 32 \
    --total_training_time "$(hours "$share")" --seed "$seed" "$@" "${EXTRA[@]}"
}

# The cooldowns of ROOT/one (ROOT SEED; the seed is unused: the checkpoints carry theirs).
cooldown() { job "$1" cooldown "$1/one/cooldown" "$PYTHON" -m budget_bert.cooldown "$1/one"; }

# Two jobs side by side, each a command line in one word; fails when either fails.
pair() {
  eval "$1" & local first=$!
  eval "$2" & local second=$!
  wait $first && wait $second
}

# Every model of ROOT on the same masked examples: the table and the plot.
report() {
  "$PYTHON" -m budget_bert.report "$1/one" --separate_runs "$1"/separate-*/ "$1/linear"
  cat "$1/costs.txt"
  echo "table: $1/one/report/report.md, plot: $1/one/report/budget_curve.png"
}

JOBS=("pretrain ROOT SEED one 1 --curve wsd --finetune_time_markers 0.2,0.4,0.6" "pretrain ROOT SEED linear 1 --curve linear"
      "cooldown ROOT SEED" "pretrain ROOT SEED separate-0.75 0.75 --curve wsd"
      "pretrain ROOT SEED separate-0.25 0.25 --curve wsd" "pretrain ROOT SEED separate-0.5 0.5 --curve wsd")
at() { local line=${1//ROOT/\"$2\"}; echo "${line//SEED/$3}"; }  # a job's line for one seed's folder

if (( ${#SEED_LIST[@]} == 0 )); then
  mkdir -p "$WORK"
  for (( i = 0; i < ${#JOBS[@]}; i += 2 )); do
    pair "$(at "${JOBS[i]}" "$WORK" 1)" "$(at "${JOBS[i + 1]}" "$WORK" 1)"
  done
  report "$WORK"
else
  A=${SEED_LIST[0]} B=${SEED_LIST[1]}
  mkdir -p "$WORK/seed-$A" "$WORK/seed-$B"
  for line in "${JOBS[@]}"; do
    pair "$(at "$line" "$WORK/seed-$A" "$A")" "$(at "$line" "$WORK/seed-$B" "$B")"
  done
  report "$WORK/seed-$A"
  report "$WORK/seed-$B"
fi
