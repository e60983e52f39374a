#!/usr/bin/env bash
# Issue 13's GPU check in one call: what users run, on one GPU, in at most 8 minutes; one table at the end.
#
#   bench/gpu_check.sh [--dry-run] [--only STEP,...] [--results DIR] [--work DIR] [--deadline SECONDS]
#
# Steps (a failing step does not stop the others; each one's result and figures go into the table):
#   wheels          the wheels in bench/gpu_wheels that the image lacks, installed offline (bench/gpu_wheels.sh)
#   data            the standard library's documentation, a WordPiece tokenizer trained on it, prepare_data.py
#                   (as the demo does); a CoLA-like csv (sentences, and the same words shuffled) for run_glue.py
#   mlm_fp16_zero1  deepspeed --num_gpus 1 run_mlm.py --deepspeed ds_configs/zero1.json --fp16 with the seed's
#                   flags (README.md; this check's shape, data and a 2-minute budget), validation, markers 0.5,0.9:
#                   SIGTERM to the training process after the 0.5 snapshot exits 75 with a complete checkpoint, the
#                   same command resumes from it and ends on budget, and the three snapshots load with
#                   AutoModelForMaskedLM (trust_remote_code) in a fresh process where budget_bert is not importable
#   glue_fp16       run_glue.py --fp16 on the end snapshot of mlm_fp16_zero1
#   mfu_bert_large  bench/model_throughput.py at bert-large, bf16, --measure_peak: BudgetBert compiled (the target:
#                   50% MFU) and eager, next to stock BERT and ModernBERT (eager)
#   mfu_bert_base   the same at bert-base, batch 512 (target: 45%)
#   mlm_bf16_zero2  the mlm_fp16_zero1 command with --bf16 and ds_configs/zero2.json (no SIGTERM)
#   mlm_compile     mlm_bf16_zero2 with --torch_compile: no graph break; tokens/s against mlm_bf16_zero2's
#   pipeline        bench/pipeline_throughput.py: run_mlm.py's own tokens/s over the model's alone (target: 0.9)
#   pipeline_workers  the same with run_mlm.py's --dataloader_num_workers 2 (the Trainer's default is 0: the training
#                   process fetches and collates each batch itself)
#
# --dry-run runs the same steps on the CPU with a tiny model, tiny data and budgets of seconds: fp16 is DeepSpeed's
# where this CPU runs it, else bf16; run_glue.py runs bf16; the MFU steps use the small preset and a nominal peak;
# the compiled runs (mlm_compile, BudgetBert in the MFU steps) use the aot_eager backend (DRY_RUN_COMPILE_BACKEND=
# inductor for inductor's CPU code, minutes).
# --only runs the named steps alone (the wheels are installed either way; later steps need the data step's folder
# and glue_fp16 a pretraining snapshot, from this call or an earlier one with the same --work).
# --results (default WORK/results) receives summary.md, every step's log and the benchmarks' JSON; --work (default
# /tmp/gpu_check) the data, runs and installed wheels; --deadline (default 480 s, 1800 dry) bounds the whole call:
# a step that would start later is skipped, a command still running then is stopped. The exit code is 0 when every
# selected step passed (a skipped one did not). PYTHON picks the interpreter (default python3; .venv/bin/python for
# --dry-run).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# In the order of what matters most, since the deadline skips the last ones when the call runs long.
STEPS=(wheels data mlm_fp16_zero1 glue_fp16 mfu_bert_large mfu_bert_base mlm_bf16_zero2 mlm_compile pipeline
  pipeline_workers)

usage() {
  sed -n '2,4p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  echo "steps: ${STEPS[*]}" >&2
  exit 2
}

DRY_RUN=0 ONLY="" WORK=/tmp/gpu_check RESULTS="" DEADLINE=""
while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --only) ONLY=${2:?--only needs step names, e.g. --only data,mlm_bf16_zero2}; shift ;;
    --results) RESULTS=${2:?--results needs a folder}; shift ;;
    --work) WORK=${2:?--work needs a folder}; shift ;;
    --deadline) DEADLINE=${2:?--deadline needs seconds}; shift ;;
    -h | --help) usage ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done
for name in ${ONLY//,/ }; do
  [[ " ${STEPS[*]} " == *" $name "* ]] || { echo "gpu_check.sh: --only: no step $name" >&2; usage; }
done

# --- the two configurations: the GPU machine, and the CPU dry run ---------------------------------------------------
if ((DRY_RUN)); then
  [[ -x $REPO/.venv/bin/python ]] && PY=${PYTHON:-$REPO/.venv/bin/python} || PY=${PYTHON:-python3}
  DEADLINE=${DEADLINE:-1800}
  CORPUS_MODULES='["argparse", "collections", "csv", "datetime", "functools", "itertools", "json", "pathlib", "re", "typing"]'
  VOCAB=2000 SEQ=64 SHARDS=4 GLUE_TRAIN=320 GLUE_VALIDATION=128
  SHAPE=(--hidden_size 64 --num_hidden_layers 2 --num_attention_heads 2 --intermediate_size 128)
  MICRO_BATCH=8 GLOBAL_BATCH=16 PRINT_STEPS=5
  FP16_MINUTES=0.5 BF16_MINUTES=0.15 COMPILE_MINUTES=0.5 COMPILE_BACKEND=${DRY_RUN_COMPILE_BACKEND:-aot_eager}
  GLUE_FLAGS=(--bf16 --use_cpu --max_steps 20 --per_device_train_batch_size 16 --learning_rate 5e-4)
  MFU_FLAGS=(--device cpu --dtype fp32 --seq_len 32 --vocab_size 1000 --rounds 2 --warmup_rounds 1
             --steps_per_round 1 --peak_tflops 1 --torch_compile_backend "$COMPILE_BACKEND")
  MFU_PRESETS=(small small) MFU_BATCHES=(4 4)
  PIPELINE_FLAGS=(--preset small --batch 8 --dtype bf16 --budget_seconds 15 --logging_steps 5 --rounds 3
                  --warmup_rounds 1 --steps_per_round 2)
  : "${OMP_NUM_THREADS:=1}"  # a small shared CPU: more threads per process only contend
  export OMP_NUM_THREADS
else
  PY=${PYTHON:-python3}
  DEADLINE=${DEADLINE:-480}
  CORPUS_MODULES=None VOCAB=8192 SEQ=128 SHARDS=1 GLUE_TRAIN=4000 GLUE_VALIDATION=500
  SHAPE=(--hidden_size 768 --num_hidden_layers 12 --num_attention_heads 12 --intermediate_size 3072)
  MICRO_BATCH=128 GLOBAL_BATCH=1024 PRINT_STEPS=10
  # Seconds on an H200 (2026-12-04): wheels 19, data 21, mlm_fp16_zero1 194 (two starts, the budget, saves,
  # loading), glue 23, MFU 111 and 52 (inductor compiles BudgetBert in the warmup round), mlm_bf16_zero2 59,
  # mlm_compile 104 (inductor's compilation is in the budget), pipeline 54: 637 in all, so the deadline skips the
  # last steps of one call; a second call with --only runs them.
  FP16_MINUTES=2 BF16_MINUTES=0.25 COMPILE_MINUTES=1 COMPILE_BACKEND=inductor
  GLUE_FLAGS=(--fp16 --max_steps 100 --per_device_train_batch_size 32 --learning_rate 1e-4)
  MFU_FLAGS=(--device cuda --dtype bf16 --measure_peak --rounds 4 --warmup_rounds 1 --steps_per_round 5)
  # bert-base at batch 256 reached 44.2% MFU compiled (2026-12-04): its larger batch is to be tried next; bert-large
  # reached 52.4% at 256.
  MFU_PRESETS=(bert-base bert-large) MFU_BATCHES=(512 256)
  PIPELINE_FLAGS=(--preset bert-base --batch 256 --dtype bf16 --budget_seconds 20 --logging_steps 10)
fi
PY=$(command -v "$PY") || { echo "gpu_check.sh: no Python interpreter $PY (set PYTHON)" >&2; exit 2; }
RESULTS=${RESULTS:-$WORK/results}
LOGS=$RESULTS/logs
mkdir -p "$WORK" "$LOGS"
DEADLINE_AT=$(($(date +%s) + DEADLINE))
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
# Remote code, caches and DeepSpeed's JIT-compiled ops stay in this check's folder (on a shared machine, another
# user's build of the same op with other flags would make each of them rebuild it).
export HF_HOME=$WORK/hf_home TORCH_EXTENSIONS_DIR=$WORK/torch_extensions
export PYTHONPATH=$WORK/site:$REPO${PYTHONPATH:+:$PYTHONPATH}
export PATH=$WORK/site/bin:$(dirname "$PY"):$PATH
cd "$REPO" || exit 1

# --- helpers ---------------------------------------------------------------------------------------------------------
remaining() { echo $((DEADLINE_AT - $(date +%s))); }

timed() {  # COMMAND...: run it, stopped at the deadline
  local left
  left=$(remaining)
  ((left > 0)) || { echo "out of time (--deadline $DEADLINE)"; return 124; }
  timeout -k 10 "$left" "$@"
}

figure() { local text="$*"; printf '%s; ' "${text//$'\n'/; }" >> "$FIGURES"; }  # a figure of the step, for the table

fail() { echo "FAILED: $*"; figure "$*"; return 1; }

figure_of() {  # COMMAND...: the last line of its output as a figure; its FAILED lines, and fail, when it fails
  local text rc=0
  text=$("$@") || rc=$?
  printf '%s\n' "$text"
  if ((rc)); then
    figure "$(grep '^FAILED: ' <<< "$text" | sed 's/^FAILED: //')"
    fail "$1 exited $rc"
  fi
  figure "$(tail -n 1 <<< "$text")"
}

free_port() { "$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }

descendants() {  # PID: the processes under PID, parents first
  local queue=("$1") pid child
  while ((${#queue[@]})); do
    pid=${queue[0]} queue=("${queue[@]:1}")
    for child in $(pgrep -P "$pid"); do
      echo "$child"
      queue+=("$child")
    done
  done
}

worker_of() {  # PID: the training process under the launcher started as PID (the one deepspeed gave --local_rank)
  local pid
  for pid in $(descendants "$1"); do
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- '--local_rank=' && { echo "$pid"; return 0; }
  done
  return 1
}

mlm_command() {  # OUT ZERO PRECISION MINUTES [FLAG...]: the seed's pretraining command (README.md) in MLM, with
  # this check's tokenizer, data, shape, batch and budget; under `deepspeed --num_gpus 1`
  local out=$1 zero=$2 precision=$3 hours
  hours=$("$PY" -c "print(repr($4 / 60))")
  shift 4
  MLM=(deepspeed --num_gpus 1 --master_port "$(free_port)" run_mlm.py
    --model_type bert-mlm --tokenizer_name "$WORK/tokenizer" --hidden_act gelu "${SHAPE[@]}"
    --hidden_dropout_prob 0.1 --attention_probs_dropout_prob 0.1 --encoder_ln_mode pre-ln --lr 1e-3
    --train_batch_size "$GLOBAL_BATCH" --train_micro_batch_size_per_gpu "$MICRO_BATCH"
    --lr_schedule time --curve linear --warmup_proportion 0.06 --gradient_clipping 0.0
    --optimizer_type adamw --weight_decay 0.01 --adam_beta1 0.9 --adam_beta2 0.98 --adam_eps 1e-6
    --total_training_time "$hours" --early_exit_time_marker "$hours" --dataset_path "$WORK/data"
    --output_dir "$out" --print_steps "$PRINT_STEPS" --num_epochs_between_checkpoints 10000
    --job_name pretraining_experiment --project_name budget-bert-pretraining
    --validation_epochs 3 --validation_epochs_begin 1 --validation_epochs_end 1
    --validation_begin_proportion 0.05 --validation_end_proportion 0.01 --validation_micro_batch 16
    --deepspeed "ds_configs/$zero.json" --data_loader_type dist --do_validation --use_early_stopping
    --early_stop_time 180 --early_stop_eval_loss 6 --seed 42 "$precision" --finetune_time_markers 0.5,0.9
    --disable_tqdm true "$@")
  echo "\$ ${MLM[*]}"
}

check_run() {  # OUT MINUTES [STEP SECOND_LOG]: a finished run: on budget, validated, three snapshots; resumed from
  # checkpoint-STEP when given. Prints the figures; tokens/s is the median of the training logs after the first two.
  "$PY" - "$@" <<'PY'
import ast, json, statistics, sys
from pathlib import Path

out, budget = Path(sys.argv[1]), float(sys.argv[2]) * 60
state = json.loads((out / "trainer_state.json").read_text())
history, problems, figures = state["log_history"], [], []
rates = [entry["tokens_per_second"] for entry in history if "tokens_per_second" in entry]
fraction = max(entry.get("budget_fraction", 0.0) for entry in history)
evals = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
snapshots = sorted(path.name for path in (out / "finetune_snapshots").iterdir())
if fraction < 1.0:
    problems.append(f"it stopped at {fraction:.0%} of the budget")
if not evals:
    problems.append("no validation")
if snapshots != ["end", "marker-0.50", "marker-0.90"]:
    problems.append(f"snapshots {snapshots}, not end, marker-0.50, marker-0.90")
if len(sys.argv) > 3:
    step, second_log = int(sys.argv[3]), Path(sys.argv[4])
    saved = json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())
    used = saved["stateful_callbacks"]["BudgetCallback"]["attributes"]["elapsed_seconds"]
    logs = [ast.literal_eval(line) for line in second_log.read_text().splitlines() if line.startswith("{'loss'")]
    if not logs or int(logs[0]["num_input_tokens_seen"]) <= saved["num_input_tokens_seen"]:
        problems.append(f"the second run did not continue from checkpoint-{step}")
    figures.append(f"SIGTERM at step {step} ({used / budget:.0%} of the budget): exit 75, checkpoint; "
                   "the same command resumed it")
figures.append(f"{state['global_step']} steps, {fraction:.0%} of {budget:.0f} s")
if rates:
    figures.append(f"{statistics.median(rates[2:] or rates):,.0f} tok/s")
if evals:
    figures.append(f"eval loss {evals[-1]:.3f} ({len(evals)} validations)")
for problem in problems:
    print(f"FAILED: {problem}")
print("; ".join(figures))
sys.exit(1 if problems else 0)
PY
}

check_snapshots() {  # OUT: every snapshot loads and predicts with AutoModelForMaskedLM in a fresh process where
  # budget_bert cannot be imported (not from this repository, nor from an installed copy)
  (cd "$WORK" && PYTHONPATH=$WORK/site timed "$PY" - "$1/finetune_snapshots" <<'PY'
import sys
from pathlib import Path


class RefuseBudgetBert:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "budget_bert":
            raise ImportError(f"{name} is not importable here")
        return None


sys.meta_path.insert(0, RefuseBudgetBert())
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

device = "cuda" if torch.cuda.is_available() else "cpu"
loaded = []
for folder in sorted(Path(sys.argv[1]).iterdir()):
    model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True).to(device).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    batch = tokenizer(["The function returns a [MASK] of the values."], return_tensors="pt").to(device)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all(), folder
    loaded.append(folder.name)
assert not [name for name in sys.modules if name.startswith("budget_bert")]
print(f"{len(loaded)} snapshots load without budget_bert: {', '.join(loaded)}")
PY
  )
}

json_figures() {  # FILE EXPRESSION: a Python expression over the JSON file's content `r`
  "$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); print($2)" "$1"
}

# --- the steps (each runs in a subshell with `set -e`; its output goes to its log) --------------------------------
step_wheels() {
  if [[ ! -d bench/gpu_wheels ]]; then
    ((DRY_RUN)) || fail "bench/gpu_wheels is missing: run bench/gpu_wheels.sh download here and carry it"
    figure "no bench/gpu_wheels here: the install is not exercised"
  else
    figure "$(sed -n 's/^installing into [^:]*: //p' "$LOGS/install.log" | wc -w) of $(ls bench/gpu_wheels/*.whl | wc -l) wheels installed, the rest present"
  fi
  figure_of "$PY" -c "
import datasets, deepspeed, evaluate, torch, transformers
device = torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'
print(f'{device}; torch {torch.__version__}, transformers {transformers.__version__}, datasets {datasets.__version__}, '
      f'deepspeed {deepspeed.__version__}, evaluate {evaluate.__version__}')"
  if ((!DRY_RUN)); then
    "$PY" -c "import torch; assert torch.cuda.is_available()" || fail "torch sees no CUDA device"
  fi
}

step_data() {
  rm -rf "$WORK/corpus" "$WORK/tokenizer" "$WORK/data" "$WORK/glue"
  timed "$PY" - "$WORK" "$VOCAB" "$CORPUS_MODULES" "$GLUE_TRAIN" "$GLUE_VALIDATION" <<'PY'
import ast, csv, random, re, sys
from pathlib import Path

from budget_bert.data.corpora import write_stdlib_corpus
from budget_bert.data.tokenization import train_wordpiece_tokenizer

work, vocab, modules = Path(sys.argv[1]), int(sys.argv[2]), ast.literal_eval(sys.argv[3])
train_size, validation_size = int(sys.argv[4]), int(sys.argv[5])
corpus = write_stdlib_corpus(work / "corpus", modules=modules)
train_wordpiece_tokenizer([corpus.path], vocab, work / "tokenizer")
print(f"corpus: {corpus.documents} documents, {corpus.words:,} words, {corpus.modules} modules")
# Acceptability, as in CoLA: a sentence of the corpus (label 1) or the same words shuffled (0).
text = corpus.path.read_text()
sentences = sorted({s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 6 <= len(s.split()) <= 30})
rng = random.Random(0)
rng.shuffle(sentences)
rows = []
for index, sentence in enumerate(sentences[: train_size + validation_size]):
    words = sentence.split()
    while index % 2 and words == sentence.split():
        rng.shuffle(words)
    rows.append((" ".join(words), 1 - index % 2))
(work / "glue").mkdir()
for name, part in (("train", rows[:train_size]), ("validation", rows[train_size:])):
    with open(work / "glue" / f"{name}.csv", "w", newline="") as f:
        csv.writer(f).writerows([("sentence", "label"), *part])
print(f"acceptability csv: {len(rows[:train_size])} training, {len(rows[train_size:])} validation sentences")
PY
  timed "$PY" prepare_data.py --train_file "$WORK/corpus/stdlib_docs.txt" --tokenizer_name "$WORK/tokenizer" \
    --output_dir "$WORK/data" --max_seq_length "$SEQ" --num_shards "$SHARDS" --validation_proportion 0.02 --seed 42
  figure_of json_figures "$WORK/data/metadata.json" \
    "f\"{r['train_examples']:,} training, {r['validation_examples']:,} validation examples of {r['max_seq_length']} tokens, vocabulary {r['vocab_size']:,}\""
}

need_data() {
  [[ -f $WORK/data/metadata.json ]] || fail "no prepared data in $WORK/data: run the data step"
}

step_mlm_fp16_zero1() {
  local out=$WORK/runs/mlm_fp16_zero1 first=$LOGS/mlm_fp16_zero1.first.log second=$LOGS/mlm_fp16_zero1.second.log
  local precision=--fp16 worker rc=0 step
  need_data
  if ((DRY_RUN)) && ! "$PY" -c "from deepspeed.accelerator import get_accelerator as a; assert a().is_fp16_supported()" 2>/dev/null; then
    precision=--bf16
    figure "bf16: this CPU lacks DeepSpeed's fp16"
  fi
  rm -rf "$out"
  mlm_command "$out" zero1 "$precision" "$FP16_MINUTES"
  timed "${MLM[@]}" > "$first" 2>&1 &
  LAUNCHER=$!
  trap 'status=$?; kill -9 $(descendants "$LAUNCHER") 2> /dev/null || true; exit $status' EXIT  # none left on failure
  until [[ -d $out/finetune_snapshots/marker-0.50 ]]; do
    kill -0 "$LAUNCHER" 2>/dev/null || { tail -20 "$first"; fail "the run ended before its 0.5 marker (logs/${first##*/})"; }
    sleep 0.5
  done
  worker=$(worker_of "$LAUNCHER") || fail "no training process under the launcher"
  echo "SIGTERM to the training process $worker"
  kill -TERM "$worker"
  wait "$LAUNCHER" || rc=$?
  tail -3 "$first"
  ((rc == 75)) || fail "the run sent SIGTERM exited $rc, not 75 (logs/${first##*/})"
  step=$(sed -n 's/^Preempted at step \([0-9]*\) .*/\1/p' "$first")
  [[ -n $step ]] || fail "no 'Preempted at step' line (logs/${first##*/})"
  grep -q 'Resume with: deepspeed --num_gpus 1 ' "$first" || fail "no 'Resume with: deepspeed --num_gpus 1 ...' line"
  [[ -f $out/checkpoint-$step/budget_bert_complete.json ]] || fail "checkpoint-$step is not complete"
  echo "\$ (the same command again)"
  rc=0
  timed "${MLM[@]}" > "$second" 2>&1 || rc=$?
  tail -3 "$second"
  ((rc == 0)) || fail "the resumed run exited $rc (logs/${second##*/})"
  figure_of check_run "$out" "$FP16_MINUTES" "$step" "$second"
  figure_of check_snapshots "$out"
}

train_and_check() {  # NAME ZERO PRECISION MINUTES [FLAG...]: one run_mlm.py run under deepspeed, checked
  local name=$1 out=$WORK/runs/$1 rc=0
  need_data
  rm -rf "$out"
  mlm_command "$out" "${@:2}"
  timed "${MLM[@]}" > "$LOGS/$name.run.log" 2>&1 || rc=$?
  tail -3 "$LOGS/$name.run.log"
  ((rc == 0)) || fail "run_mlm.py exited $rc (logs/$name.run.log)"
  figure_of check_run "$out" "$4"
  figure_of check_snapshots "$out"
}

step_mlm_bf16_zero2() {
  train_and_check mlm_bf16_zero2 zero2 --bf16 "$BF16_MINUTES"
}

compile_speedup() {  # EAGER_RUN COMPILED_RUN: the ratio of their median training tokens/s after the first two logs
  "$PY" - "$@" <<'PY'
import json, statistics, sys
rates = []
for out in sys.argv[1:]:
    history = json.load(open(f"{out}/trainer_state.json"))["log_history"]
    logged = [entry["tokens_per_second"] for entry in history if "tokens_per_second" in entry]
    rates.append(statistics.median(logged[2:] or logged) if logged else None)
if None in rates:
    print("compiled / eager (mlm_bf16_zero2) tok/s: a run has no training log to compare")
else:
    print(f"compiled / eager (mlm_bf16_zero2) tok/s: {rates[1] / rates[0]:.2f}x")
PY
}

step_mlm_compile() {
  local breaks
  TORCH_LOGS=graph_breaks train_and_check mlm_compile zero2 --bf16 "$COMPILE_MINUTES" --torch_compile \
    --torch_compile_backend "$COMPILE_BACKEND"
  breaks=$(grep -c '\[__graph_breaks\] Graph break' "$LOGS/mlm_compile.run.log" || true)
  figure "backend $COMPILE_BACKEND, $breaks graph breaks"
  ((breaks == 0)) || fail "graph breaks in the training step (logs/mlm_compile.run.log)"
  if [[ -f $WORK/runs/mlm_bf16_zero2/trainer_state.json ]]; then
    figure_of compile_speedup "$WORK/runs/mlm_bf16_zero2" "$WORK/runs/mlm_compile"
  fi
}

step_glue_fp16() {
  local snapshot="" out=$WORK/runs/glue_fp16 run
  for run in mlm_fp16_zero1 mlm_bf16_zero2 mlm_compile; do
    if [[ -d $WORK/runs/$run/finetune_snapshots/end ]]; then
      snapshot=$WORK/runs/$run/finetune_snapshots/end
      break
    fi
  done
  [[ -n $snapshot ]] || fail "no pretraining snapshot: run mlm_fp16_zero1 first"
  [[ -f $WORK/glue/train.csv ]] || fail "no $WORK/glue/train.csv: run the data step"
  figure "${GLUE_FLAGS[0]}, from ${snapshot#"$WORK/runs/"}"
  timed "$PY" run_glue.py --model_name_or_path "$snapshot" --task_name cola --train_file "$WORK/glue/train.csv" \
    --validation_file "$WORK/glue/validation.csv" --do_train --do_eval --max_seq_length "$SEQ" \
    --no_pad_to_max_length --per_device_eval_batch_size 128 --weight_decay 0.01 --warmup_steps 0.1 \
    --logging_steps 10 --save_strategy no --seed 42 --output_dir "$out" --overwrite_output_dir "${GLUE_FLAGS[@]}"
  figure_of json_figures "$out/all_results.json" \
    "f\"{r['train_samples']:,} sentences, {r['epoch']:.2f} epochs, {r['train_samples_per_second']:,.0f} samples/s; Matthews correlation {r['eval_matthews_correlation']:.3f} on {r['eval_samples']:,}\""
}

mfu_step() {  # PRESET BATCH GOAL LABEL: model_throughput.py at PRESET and BATCH; GOAL is BudgetBert's MFU target,
  # LABEL it in %
  local json=$RESULTS/mfu_$1.json
  # BudgetBert twice, as budget_bert (compiled) and budget_bert_defaults (the same model, eager).
  timed "$PY" bench/model_throughput.py --preset "$1" --batch "$2" --references bert,modernbert,budget_bert_defaults \
    --torch_compile budget_bert "${MFU_FLAGS[@]}" --output_json "$json"
  figure_of json_figures "$json" \
    "f\"batch {r['args']['batch']}: \" + ', '.join(f\"{dict(budget_bert='budget_bert compiled', budget_bert_defaults='budget_bert eager').get(n, n)} {r['tokens_per_second'][n]:,.0f} tok/s, MFU {r['mfu'][n]:.1%}\" for n in r['mfu']) + f\"; peak {r.get('measured_peak_tflops') or r['args']['peak_tflops']:,.0f} TFLOP/s\" + (f\"; {r['max_memory_allocated_gib']:.1f} GiB\" if 'max_memory_allocated_gib' in r else '')"
  if ((DRY_RUN)); then
    TARGET="MFU >= $4: n/a (dry run)"
  else
    TARGET="MFU >= $4: $(json_figures "$json" "'met' if r['mfu']['budget_bert'] >= $3 else 'missed'")"
  fi
}

step_mfu_bert_base() { mfu_step "${MFU_PRESETS[0]}" "${MFU_BATCHES[0]}" 0.45 45%; }
step_mfu_bert_large() { mfu_step "${MFU_PRESETS[1]}" "${MFU_BATCHES[1]}" 0.50 50%; }

pipeline_step() {  # NAME [RUN_MLM_FLAG...]: bench/pipeline_throughput.py, the flags passed on to run_mlm.py
  local name=$1 json=$RESULTS/$1.json out=$WORK/runs/$1
  shift
  need_data
  rm -rf "$out"
  timed "$PY" bench/pipeline_throughput.py --dataset_path "$WORK/data" --output_dir "$out" "${PIPELINE_FLAGS[@]}" \
    --output_json "$json" -- "$@"
  figure_of json_figures "$json" \
    "f\"run_mlm.py {r['run_mlm_tokens_per_second']:,.0f} tok/s, the model alone {r['model_tokens_per_second']:,.0f}: ratio {r['ratio']:.3f}\""
  if ((DRY_RUN)); then
    TARGET="ratio >= 0.9: n/a (dry run)"
  else
    TARGET="ratio >= 0.9: $(json_figures "$json" "'met' if r['target_met'] else 'missed'")"
  fi
}

step_pipeline() { pipeline_step pipeline; }
# The batches fetched and collated by two loader processes instead of the training process.
step_pipeline_workers() { pipeline_step pipeline_workers --dataloader_num_workers 2; }

# --- run them --------------------------------------------------------------------------------------------------------
MODE=$( ((DRY_RUN)) && echo "dry run on the CPU" || echo "GPU")
echo "gpu_check.sh ($MODE): steps ${ONLY:-${STEPS[*]}}; results in $RESULTS; deadline ${DEADLINE} s"
# The wheels go in first, whichever steps run: every step needs them.
INSTALL_RC=0
if [[ -d bench/gpu_wheels ]]; then
  bench/gpu_wheels.sh install bench/gpu_wheels "$WORK/site" > "$LOGS/install.log" 2>&1 || INSTALL_RC=$?
fi
ROWS=() FAILED=0
for STEP in "${STEPS[@]}"; do
  [[ -z $ONLY || ",$ONLY," == *",$STEP,"* ]] || continue
  FIGURES=$RESULTS/.$STEP.figures TARGET="-"
  : > "$FIGURES"
  started=$(date +%s)
  if (($(remaining) <= 0)); then
    result="skipped (deadline)"
  elif [[ $STEP == wheels ]] && ((INSTALL_RC)); then
    cp "$LOGS/install.log" "$LOGS/wheels.log"
    figure "bench/gpu_wheels.sh install failed (logs/install.log)"
    result=FAIL
  else
    echo "== $STEP"
    # The step's TARGET (MFU and pipeline steps) comes back through a file, as its figures do. Not run as a
    # condition: bash would ignore the `set -e` inside.
    (set -e; "step_$STEP"; echo "$TARGET" > "$FIGURES.target") > "$LOGS/$STEP.log" 2>&1
    if (($? == 0)); then
      result=pass
      TARGET=$(cat "$FIGURES.target")
    else
      result=FAIL
      tail -5 "$LOGS/$STEP.log"
    fi
  fi
  [[ $result == pass ]] || FAILED=1
  figures=$(sed 's/; $//' "$FIGURES")
  rm -f "$FIGURES" "$FIGURES.target"
  seconds=$(($(date +%s) - started))
  echo "   $result in $seconds s: $figures"
  ROWS+=("| $STEP | $result | $seconds | $TARGET | ${figures//|/\\|} |")
done

{
  echo "## gpu_check.sh ($MODE), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "| step | result | seconds | target | figures |"
  echo "| --- | --- | --- | --- | --- |"
  printf '%s\n' "${ROWS[@]}"
} > "$RESULTS/summary.md"
echo
cat "$RESULTS/summary.md"
exit "$FAILED"
