"""Plan a pretraining budget before spending it: which BudgetBert shape and batch this hardware affords in H hours.

    python -m budget_bert.plan --hours 24
    python -m budget_bert.plan --hours 24 --nproc 8 --shapes base,large --output_json plan.json

For each candidate shape it probes this machine with the project's training step (BudgetBertForMaskedLM forward
with 15% of the positions labelled, backward, AdamW step, zero_grad), finds the micro batch, measures tokens/s in
each precision the device offers, keeps the fastest, and prints what the budget buys: optimizer steps, tokens,
tokens per parameter, and a recommended shape with its run_mlm.py command.

Micro batch: candidates double from 1 while micro batch x processes still divides the global batch. On CUDA the
largest candidate whose two trial steps run without running out of memory is taken. On the CPU a candidate is tried
only while its memory estimate (`estimated_training_bytes`) stays under 80% of the memory psutil reports available,
and kept only while its median step raises tokens/s by at least 5% over the best smaller one: on the CPU a bigger
batch stops paying once the matrix products are large enough, and only costs memory. tokens/s is then every token
of --probe_seconds of steps at that micro batch (after a warm-up step) over their time, on one device.

Recommendation (`RULE`): the largest shape whose budget gives at least --min_tokens_per_parameter tokens per
parameter (default 20, the compute-optimal ratio of Hoffmann et al. 2022, "Training Compute-Optimal Large Language
Models", measured on decoders). Encoder studies under small budgets point the same way, towards the biggest model the
budget can still feed: Izsak et al. 2021 ("How to Train BERT with an Academic Budget") found a large model trained
for fewer steps better than a base one in the same time with their recipe, and Geiping & Goldstein 2022 ("Cramming")
found that larger models learn more per token, the gain being bounded by how many tokens the budget lets them see.
When no shape reaches the threshold, the best-fed shape (most tokens per parameter) is recommended.
"""

import gc
import json
import logging
import math
import statistics
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import psutil
import torch
from transformers import HfArgumentParser
from transformers.utils import logging as hf_logging

from budget_bert import BudgetBertConfig, BudgetBertForMaskedLM


logger = hf_logging.get_logger(__name__)

PROG = "python -m budget_bert.plan"
RULE = (
    "the largest shape with at least {threshold:g} tokens per parameter in the budget (Hoffmann et al. "
    "2022, Chinchilla: ~20 tokens/parameter is compute-optimal; Izsak et al. 2021 and Geiping & Goldstein 2022, "
    "Cramming: under a small budget the biggest model the budget can feed trains best); if none reaches it, the "
    "shape with the most tokens per parameter"
)


@dataclass(frozen=True)
class Shape:
    """An encoder shape: the run_mlm.py flags of the same names."""

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int


# tiny is Turc et al. 2019's BERT-Tiny, small the demo's model (their BERT-Mini), base and large Devlin et al. 2019.
SHAPES = {
    "tiny": Shape(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "small": Shape(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "base": Shape(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "large": Shape(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096),
}
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}
# Share of positions with a label, as run_mlm.py's --mlm_probability default; the sparse MLM head decodes only those.
MLM_PROBABILITY = 0.15
# Share of --probe_seconds that the CPU micro-batch search spends timing each candidate.
SEARCH_SHARE = 0.25
# A CPU candidate must beat the best smaller micro batch by this factor in tokens/s to be kept.
MIN_SPEEDUP = 1.05
# Share of the available memory that a CPU candidate's estimate may use.
MEMORY_SHARE = 0.8


def device_precisions(device: str) -> list[str]:
    """The precisions `device` offers: fp32, and bf16 autocast where the hardware computes in bf16."""
    if device == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
    else:
        # torch has no public query; these are the checks its own CPU backends use. Without AVX512-BF16 or AMX, bf16
        # autocast on the CPU is emulated and slower than fp32.
        bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return ["fp32", "bf16"] if bf16 else ["fp32"]


@dataclass
class PlanArguments:
    """The budget, the hardware to plan for, and the candidates."""

    hours: float = field(metadata={"help": "The training budget in hours (run_mlm.py's --total_training_time)."})
    nproc: int = field(
        default=1,
        metadata={"help": "Processes (GPUs) of the run. The probe measures one; the total is scaled by "
                  "--scaling_efficiency."},
    )
    shapes: str = field(
        default="tiny,small,base,large",
        metadata={"help": f"Comma-separated candidate shapes, of {', '.join(SHAPES)} (layers x hidden: "
                  + ", ".join(f"{n} {s.num_hidden_layers}x{s.hidden_size}" for n, s in SHAPES.items()) + ")."},
    )
    global_batch: int = field(
        default=4096, metadata={"help": "Sequences per optimizer step (run_mlm.py's --train_batch_size; the seed's)."}
    )
    seq: int = field(
        default=128, metadata={"help": "Tokens per sequence (prepare_data.py's --max_seq_length; the seed's)."}
    )
    output_json: str | None = field(default=None, metadata={"help": "Also write the table to this JSON file."})
    probe_seconds: float = field(
        default=5.0,
        metadata={"help": "Seconds of timed training steps per shape and precision, after warm-up (plus "
                  f"{SEARCH_SHARE:g} of that per micro batch tried on the CPU)."},
    )
    device: str | None = field(default=None, metadata={"help": "cpu or cuda (default: cuda when available)."})
    precisions: str = field(
        default="auto",
        metadata={"help": f"Comma-separated precisions to probe, of {', '.join(AUTOCAST_DTYPES)} (bf16 is "
                  "autocast, run_mlm.py's --bf16); auto: every one the device offers. The fastest is kept."},
    )
    vocab_size: int = field(
        default=30522,
        metadata={"help": "Vocabulary size of the tokenizer you will train with (bert-base-uncased: 30522)."},
    )
    scaling_efficiency: float = field(
        default=0.9,
        metadata={"help": "Assumed efficiency of data-parallel training (DDP, gradients all-reduced during the "
                  "backward pass): total tokens/s = per-device tokens/s x --nproc x this. An assumption, not "
                  "measured; ignored for --nproc 1."},
    )
    min_tokens_per_parameter: float = field(
        default=20.0,
        metadata={"help": "Threshold of the recommendation rule, which picks " + RULE.format(threshold=20)},
    )

    def __post_init__(self):
        problems = []
        if not self.hours > 0:
            problems.append(f"--hours must be > 0, got {self.hours}")
        for name in ("nproc", "global_batch", "seq", "vocab_size"):
            if getattr(self, name) < 1:
                problems.append(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.nproc >= 1 and self.global_batch >= 1 and self.global_batch % self.nproc:
            problems.append(f"--global_batch {self.global_batch} is not a multiple of --nproc {self.nproc}: "
                            "change one of them")
        unknown = [name for name in self.shape_names if name not in SHAPES]
        if unknown or not self.shape_names:
            problems.append(f"--shapes: unknown shape(s) {', '.join(unknown) or '(none given)'}; choose from "
                            f"{', '.join(SHAPES)}")
        if len(set(self.shape_names)) != len(self.shape_names):
            problems.append(f"--shapes {self.shapes} names a shape twice")
        if not self.probe_seconds > 0:
            problems.append(f"--probe_seconds must be > 0, got {self.probe_seconds}")
        if not 0 < self.scaling_efficiency <= 1:
            problems.append(f"--scaling_efficiency must be in (0, 1], got {self.scaling_efficiency}")
        if not self.min_tokens_per_parameter > 0:
            problems.append(f"--min_tokens_per_parameter must be > 0, got {self.min_tokens_per_parameter}")
        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device not in ("cpu", "cuda"):
            problems.append(f"--device must be cpu or cuda, got {self.device}")
        elif self.device == "cuda" and not torch.cuda.is_available():
            problems.append("--device cuda: no CUDA device is visible; use --device cpu")
        else:
            offered = device_precisions(self.device)
            wanted = offered if self.precisions == "auto" else self.precisions.split(",")
            refused = [p for p in wanted if p not in offered]
            if refused:
                problems.append(f"--precisions: {', '.join(refused)} not available on {self.device}; it offers "
                                f"{', '.join(offered)} (or use auto)")
            self.precisions = ",".join(wanted)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def shape_names(self) -> list[str]:
        """The names in --shapes, in the order given."""
        return [name.strip() for name in self.shapes.split(",") if name.strip()]

    @property
    def precision_names(self) -> list[str]:
        """The precisions to probe (after `auto` is resolved)."""
        return self.precisions.split(",")

    @property
    def micro_batch_candidates(self) -> list[int]:
        """1, 2, 4, ... while micro batch x processes divides the global batch (so accumulation is a whole number)."""
        candidates, micro = [], 1
        while self.global_batch % (micro * self.nproc) == 0:
            candidates.append(micro)
            micro *= 2
        return candidates

    @property
    def budget_seconds(self) -> float:
        """The budget in seconds."""
        return self.hours * 3600.0


def parse_plan_args(argv: list[str] | None = None) -> PlanArguments:
    """Parse the planner's flags; a bad value exits with status 2 and one line naming the flag."""
    parser = HfArgumentParser(PlanArguments)
    parser.prog = PROG
    parser.description = __doc__.split("\n\n")[0] + " Recommended: " + RULE.format(threshold=20) + "."
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return args


def model_config(shape: Shape, args: PlanArguments) -> BudgetBertConfig:
    """The BudgetBertConfig run_mlm.py builds for `shape` (its defaults otherwise)."""
    return BudgetBertConfig(
        vocab_size=args.vocab_size, max_position_embeddings=max(512, args.seq), **asdict(shape)
    )


def count_parameters(shape: Shape, args: PlanArguments) -> int:
    """Trainable parameters of the BudgetBertForMaskedLM of `shape` (the tied decoder counted once)."""
    with torch.device("meta"):
        model = BudgetBertForMaskedLM(model_config(shape, args))
    return sum(p.numel() for p in model.parameters())


def estimated_training_bytes(shape: Shape, parameters: int, micro_batch: int, args: PlanArguments) -> int:
    """Memory of an fp32 training step: 16 bytes per parameter (weights, gradients, two AdamW moments) plus the
    activations, per layer and sequence 2 x seq x hidden x (34 + 5 x heads x seq / hidden) bytes (Korthikanti et al.
    2022, eq. 1, counted for 2-byte values, doubled for fp32), plus the MLM head's logits over the vocabulary at the
    labelled positions (value, softmax and gradient, 4 bytes each)."""
    seq, hidden, heads = args.seq, shape.hidden_size, shape.num_attention_heads
    per_layer = 2 * seq * hidden * (34 + 5 * heads * seq / hidden)
    head = 3 * 4 * math.ceil(MLM_PROBABILITY * seq) * args.vocab_size
    return int(16 * parameters + micro_batch * (shape.num_hidden_layers * per_layer + head))


def choose_micro_batch(
    candidates: list[int], fits: Callable[[int], bool], tokens_per_second: Callable[[int], float] | None = None
) -> int:
    """The micro batch by the module's rule: the largest candidate that `fits`, or, given `tokens_per_second`
    (the CPU), the last one that still gained `MIN_SPEEDUP` over the best smaller one. 0 when none fits."""
    chosen, best_speed = 0, 0.0
    for micro_batch in candidates:
        if not fits(micro_batch):
            break
        if tokens_per_second is not None:
            speed = tokens_per_second(micro_batch)
            if chosen and speed < MIN_SPEEDUP * best_speed:
                break
            best_speed = max(best_speed, speed)
        chosen = micro_batch
    return chosen


@dataclass
class Measurement:
    """One precision's probe of one shape: the micro batch and the per-device tokens/s at it (0 if none fits)."""

    precision: str
    micro_batch: int
    tokens_per_second: float
    peak_memory_gib: float | None = None


class TrainingStepProbe:
    """A BudgetBertForMaskedLM of one shape with its AdamW, stepping on random MLM batches on the probe's device."""

    def __init__(self, shape: Shape, args: PlanArguments):
        self.args = args
        self.device = torch.device(args.device)
        torch.manual_seed(0)
        self.model = BudgetBertForMaskedLM(model_config(shape, args)).to(self.device).train()
        # The Trainer's default optimizer (adamw_torch_fused), which the printed command keeps.
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)
        self.precision = "fp32"
        self.autocast = nullcontext
        self.batch: dict[str, torch.Tensor] = {}

    def set_precision(self, precision: str) -> None:
        """Run the next steps in fp32, or under bf16 autocast (as the Trainer's --bf16 does)."""
        self.precision = precision
        dtype = AUTOCAST_DTYPES[precision]
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=dtype)) if dtype else nullcontext

    def set_micro_batch(self, micro_batch: int) -> None:
        """Make the batch the next steps train on: random ids, full attention, 15% of positions labelled."""
        self.batch = {}  # free the previous batch first
        generator = torch.Generator().manual_seed(micro_batch)
        shape = (micro_batch, self.args.seq)
        input_ids = torch.randint(5, self.args.vocab_size, shape, generator=generator)
        labels = torch.where(torch.rand(shape, generator=generator) < MLM_PROBABILITY, input_ids, -100)
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
        self.batch = {name: tensor.to(self.device) for name, tensor in batch.items()}

    def step(self) -> None:
        """One optimizer step on the current batch."""
        with self.autocast():
            loss = self.model(**self.batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def synchronize(self) -> None:
        """Wait for the queued device work (nothing to wait for on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def runs_without_oom(self, micro_batch: int) -> bool:
        """Whether two steps at `micro_batch` run (the second holds the optimizer state too); frees memory if not."""
        try:
            self.set_micro_batch(micro_batch)
            self.step()
            self.step()
            self.synchronize()
            return True
        except torch.OutOfMemoryError:
            pass
        # Outside the except block, so that the traceback's frames no longer hold the activations.
        self.batch = {}
        self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return False

    def time_steps(self, seconds: float) -> list[float]:
        """Seconds of each step on the current batch, over at least `seconds` and three steps, after a warm-up step."""
        self.step()
        self.synchronize()
        times: list[float] = []
        while len(times) < 3 or sum(times) < seconds:
            start = time.perf_counter()
            self.step()
            self.synchronize()
            times.append(time.perf_counter() - start)
        return times

    def close(self) -> None:
        """Free the model, optimizer and batch (before the next shape is built)."""
        self.batch = {}
        del self.model, self.optimizer
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def probe_shape(name: str, shape: Shape, args: PlanArguments) -> list[Measurement]:
    """Probe `shape` on `args.device` in each of `args.precision_names`: the micro batch, then tokens/s at it."""
    parameters = count_parameters(shape, args)
    available = psutil.virtual_memory().available
    probe = TrainingStepProbe(shape, args)
    on_cuda = probe.device.type == "cuda"

    def fits(micro_batch: int) -> bool:
        if not on_cuda and estimated_training_bytes(shape, parameters, micro_batch, args) > MEMORY_SHARE * available:
            logger.info(f"{name}: micro batch {micro_batch} would need more than {MEMORY_SHARE:.0%} of the "
                        f"{available / 2**30:.1f} GiB available")
            return False
        return probe.runs_without_oom(micro_batch)

    def search_speed(micro_batch: int) -> float:
        # The median step: one step slowed by another process on a shared machine must not end the doubling.
        speed = micro_batch * args.seq / statistics.median(probe.time_steps(SEARCH_SHARE * args.probe_seconds))
        logger.info(f"{name} {probe.precision}: micro batch {micro_batch}: {speed:,.0f} tokens/s")
        return speed

    measurements = []
    try:
        for precision in args.precision_names:
            probe.set_precision(precision)
            micro_batch = choose_micro_batch(args.micro_batch_candidates, fits, None if on_cuda else search_speed)
            if not micro_batch:
                logger.info(f"{name} {precision}: even micro batch 1 does not fit")
                measurements.append(Measurement(precision, 0, 0.0))
                continue
            probe.set_micro_batch(micro_batch)
            if on_cuda:
                torch.cuda.reset_peak_memory_stats(probe.device)
            times = probe.time_steps(args.probe_seconds)
            speed = len(times) * micro_batch * args.seq / sum(times)
            peak = torch.cuda.max_memory_allocated(probe.device) / 2**30 if on_cuda else None
            logger.info(f"{name} {precision}: micro batch {micro_batch}, {speed:,.0f} tokens/s")
            measurements.append(Measurement(precision, micro_batch, speed, peak))
    finally:
        probe.close()
    return measurements


Probe = Callable[[str, Shape, PlanArguments], list[Measurement]]


@dataclass
class PlanRow:
    """What the budget buys with one shape; `asdict` of it is one object of the JSON output."""

    shape: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    parameters: int
    precision: str
    micro_batch: int
    gradient_accumulation_steps: int
    tokens_per_second_per_device: float
    tokens_per_second: float
    steps_in_budget: int
    tokens_in_budget: int
    tokens_per_parameter: float
    measured: dict[str, float]
    peak_memory_gib: float | None
    recommended: bool = False


def plan_row(name: str, measurements: list[Measurement], args: PlanArguments) -> PlanRow:
    """The row of shape `name` from its measurements: the fastest precision, scaled to --nproc, over the budget.

    `tokens_per_second` is the total over all processes; the budget holds whole optimizer steps of
    global batch x seq tokens.
    """
    shape = SHAPES[name]
    best = max(measurements, key=lambda m: m.tokens_per_second)
    scale = args.nproc * args.scaling_efficiency if args.nproc > 1 else 1.0
    total = best.tokens_per_second * scale
    steps = int(total * args.budget_seconds // (args.global_batch * args.seq))
    tokens = steps * args.global_batch * args.seq
    parameters = count_parameters(shape, args)
    return PlanRow(
        shape=name,
        **asdict(shape),
        parameters=parameters,
        precision=best.precision,
        micro_batch=best.micro_batch,
        gradient_accumulation_steps=args.global_batch // (best.micro_batch * args.nproc) if best.micro_batch else 0,
        tokens_per_second_per_device=best.tokens_per_second,
        tokens_per_second=total,
        steps_in_budget=steps,
        tokens_in_budget=tokens,
        tokens_per_parameter=tokens / parameters,
        measured={m.precision: m.tokens_per_second for m in measurements},
        peak_memory_gib=best.peak_memory_gib,
    )


def recommend(rows: list[PlanRow], min_tokens_per_parameter: float) -> PlanRow:
    """Mark and return the recommended row by `RULE`; raise ValueError when no shape fits on the device."""
    fitting = [row for row in rows if row.micro_batch > 0 and row.steps_in_budget > 0]
    if not fitting:
        raise ValueError("no candidate shape fits on this device or trains a single optimizer step in the budget: "
                         "add a smaller shape to --shapes, or raise --hours")
    fed = [row for row in fitting if row.tokens_per_parameter >= min_tokens_per_parameter]
    choice = max(fed, key=lambda row: row.parameters) if fed else max(fitting, key=lambda r: r.tokens_per_parameter)
    choice.recommended = True
    return choice


def plan_budget(args: PlanArguments, probe: Probe = probe_shape) -> list[PlanRow]:
    """Probe every shape in --shapes (through `probe`, injectable for tests) and mark the recommended one."""
    rows = []
    for index, name in enumerate(args.shape_names, 1):
        logger.info(f"probing {name} ({index}/{len(args.shape_names)}) on {args.device}, "
                    f"{', '.join(args.precision_names)}")
        rows.append(plan_row(name, probe(name, SHAPES[name], args), args))
    recommend(rows, args.min_tokens_per_parameter)
    return rows


def run_mlm_command(row: PlanRow, args: PlanArguments) -> str:
    """The run_mlm.py command that trains `row`'s shape in the budget; data and output folders are placeholders."""
    launcher = "python" if args.nproc == 1 else f"torchrun --nproc_per_node {args.nproc}"
    flags = [
        f"--hidden_size {row.hidden_size}",
        f"--num_hidden_layers {row.num_hidden_layers}",
        f"--num_attention_heads {row.num_attention_heads}",
        f"--intermediate_size {row.intermediate_size}",
        f"--train_batch_size {args.global_batch}",
        f"--train_micro_batch_size_per_gpu {row.micro_batch}",
        f"--total_training_time {args.hours:g}",
    ]
    if row.precision == "bf16":
        flags.append("--bf16")
    if args.seq > 512:
        flags.append(f"--max_position_embeddings {args.seq}")
    flags += ["--dataset_path $DATASET_PATH", "--output_dir $OUTPUT_DIR"]
    return f"{launcher} run_mlm.py " + " ".join(flags)


def _si(value: float) -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def render_plan(rows: list[PlanRow], args: PlanArguments) -> str:
    """The printed plan: the setting, the table, the rule, the recommendation and its run_mlm.py command."""
    lines = [
        f"Budget {args.hours:g} h on {args.nproc} x {args.device} ({_device_name(args.device)}), global batch "
        f"{args.global_batch} x {args.seq} tokens, vocabulary {args.vocab_size}, torch {torch.__version__}.",
    ]
    if args.nproc > 1:
        lines.append(
            f"Assumed: {args.nproc} processes of data-parallel training (DDP) each as fast as the one probed, at "
            f"{args.scaling_efficiency:.0%} scaling efficiency for the gradient all-reduce (--scaling_efficiency; "
            "not measured)."
        )
        if args.device == "cpu":
            lines.append("Note: processes on one CPU share its cores; the scaling assumes one machine per process.")
    header = ["shape", "params", "precision", "micro", "accum", "tok/s/dev", "tok/s", "steps", "tokens", "tok/param",
              "recommended"]
    table = [header]
    for row in rows:
        fits = row.micro_batch > 0
        table.append([
            row.shape,
            _si(row.parameters),
            row.precision if fits else "-",
            str(row.micro_batch) if fits else "no fit",
            str(row.gradient_accumulation_steps) if fits else "-",
            _si(row.tokens_per_second_per_device),
            _si(row.tokens_per_second),
            f"{row.steps_in_budget:,}",
            _si(row.tokens_in_budget),
            f"{row.tokens_per_parameter:.3g}",
            "<==" if row.recommended else "",
        ])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines += ["", *("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table), ""]
    choice = next(row for row in rows if row.recommended)
    lines += [
        *textwrap.wrap("Rule: recommend " + RULE.format(threshold=args.min_tokens_per_parameter) + ".", 116),
        f"Recommended: {choice.shape} ({_si(choice.parameters)} parameters, {choice.tokens_per_parameter:.3g} tokens "
        f"per parameter, {choice.steps_in_budget:,} steps of {args.global_batch} sequences).",
        "",
        f"Prepare the data with prepare_data.py --max_seq_length {args.seq}, then:",
        run_mlm_command(choice, args),
    ]
    return "\n".join(lines)


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    threads = torch.get_num_threads()
    return f"{threads} thread{'s' if threads > 1 else ''}, {torch.backends.cpu.get_cpu_capability()}"


def main(argv: list[str] | None = None, probe: Probe = probe_shape) -> list[PlanRow]:
    """`python -m budget_bert.plan`: parse, probe each shape, print the plan (and write the JSON)."""
    args = parse_plan_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s")
    logger.setLevel(logging.INFO)
    try:
        rows = plan_budget(args, probe)
    except ValueError as error:
        raise SystemExit(f"{PROG}: error: {error}") from None
    print(render_plan(rows, args), flush=True)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump([asdict(row) for row in rows], f, indent=2)
    return rows


if __name__ == "__main__":
    main()
