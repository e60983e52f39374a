"""Training throughput of BudgetBertForMaskedLM against reference models of the same shape, in one process.

The references (`--references`): stock transformers `BertForMaskedLM`; stock `ModernBertForMaskedLM` (its own
defaults: GeGLU MLP of 2/3 the width, so the same parameters, rotary positions, no biases but the decoder's, no
dropout, alternating local/global attention; masked-only head, SDPA); and `budget_bert_defaults`, BudgetBert without
`--budget_bert_overrides`, to measure an option combination against today's model. Every model trains (forward,
backward, fused AdamW: the Trainer's default optimizer) on the same batches: packed sequences without padding, 15%
of the positions labelled, the rest -100, BERT's dropout for BERT and BudgetBert unless `--dropout` (or an
override) says otherwise. A round is one step of each model, the order rotating from round to round so that all
see the same share of a noisy, shared machine; warmup rounds are dropped; each model's figure is the median over
rounds, and each ratio (BudgetBert's throughput over a reference's) is the median of the per-round ratios (each
round's timings are adjacent in time). The ratio in process CPU time is printed too: on an oversubscribed machine
it is the steadier of the two.

    python bench/model_throughput.py --preset small
    python bench/model_throughput.py --preset small --dropout 0 --references modernbert,budget_bert_defaults \
        --budget_bert_overrides mlp_type=glu,position_embedding_type=rope,linear_bias=false,norm_bias=false
    python bench/model_throughput.py --preset bert-base --batch 16
    python bench/model_throughput.py --preset bert-large --device cuda --dtype bf16 --batch 128 --measure_peak
    python bench/model_throughput.py --preset bert-large --device cuda --dtype bf16 --batch 256 --measure_peak \
        --references bert,modernbert,budget_bert_defaults --torch_compile budget_bert   # compiled against eager

MFU (with `--peak_tflops`): model FLOPs per token = 6 * N + 12 * L * H * T, where N counts the parameters outside
the embedding tables (the MLM decoder is tied to the word embeddings, so the vocabulary projection is not
counted, as in the PaLM/Chinchilla convention) and 12 * L * H * T is the attention score and context products
(L layers, H hidden size, T sequence length), forward and backward. The same per-token count is used for both
models, so their MFU ratio is their throughput ratio.
"""

import dataclasses
import json
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM, HfArgumentParser, ModernBertConfig

from budget_bert import BudgetBertConfig, BudgetBertForMaskedLM


PRESETS = {
    "small": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024, batch=32),
    "bert-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072, batch=16),
    "bert-large": dict(
        num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096, batch=16
    ),
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16}
REFERENCES = ("bert", "modernbert", "budget_bert_defaults")
# The batches draw token ids from 5 up, so ids 0-4 are free for the special tokens that ModernBertConfig asks for.
SPECIAL_TOKEN_IDS = dict(pad_token_id=0, cls_token_id=2, bos_token_id=2, sep_token_id=3, eos_token_id=3)
BUDGET_BERT_FIELDS = {f.name for f in dataclasses.fields(BudgetBertConfig)}


def gated_intermediate_size(intermediate_size: int) -> int:
    """Width of each half of a gated MLP with the parameters of an ungated one of `intermediate_size`: 2/3 of it,
    rounded to a multiple of 8 for aligned matrix products (1024 -> 680, 3072 -> 2048)."""
    return 8 * round(2 * intermediate_size / 3 / 8)


def parse_overrides(text: str | None) -> dict:
    """`"name=value,name=value"` -> {name: value}: true/false are booleans, numbers are numbers, the rest strings.

    Raises `ValueError` naming `--budget_bert_overrides` for a malformed item or a name BudgetBertConfig lacks.
    """
    overrides = {}
    for item in filter(None, (text or "").split(",")):
        name, equals, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name:
            raise ValueError(f"--budget_bert_overrides: {item!r} is not name=value.")
        if name not in BUDGET_BERT_FIELDS:
            raise ValueError(f"--budget_bert_overrides: {name!r} is not a BudgetBertConfig field.")
        if value.lower() in ("true", "false"):
            overrides[name] = value.lower() == "true"
        else:
            try:
                overrides[name] = json.loads(value)
            except json.JSONDecodeError:
                overrides[name] = value
    return overrides


@dataclass
class BenchmarkArguments:
    """What to benchmark and how."""

    preset: str = field(default="small", metadata={"help": f"Model shape, one of {sorted(PRESETS)}."})
    batch: int | None = field(default=None, metadata={"help": "Sequences per step (default: the preset's)."})
    seq_len: int = field(default=128, metadata={"help": "Tokens per sequence."})
    vocab_size: int = field(default=30522, metadata={"help": "Vocabulary size (bert-base-uncased: 30522)."})
    device: str = field(default="cpu", metadata={"help": "Torch device: cpu, cuda, cuda:1, ..."})
    dtype: str = field(
        default="fp32",
        metadata={"help": f"Compute dtype, one of {sorted(DTYPES)}; bf16 runs under autocast (the Trainer's --bf16)."},
    )
    rounds: int = field(default=10, metadata={"help": "Measured rounds; each times both models."})
    warmup_rounds: int = field(default=2, metadata={"help": "Rounds run first and not counted."})
    steps_per_round: int = field(default=1, metadata={"help": "Training steps per model per round."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of positions that carry a label."})
    dropout: float = field(
        default=0.1,
        metadata={
            "help": "Hidden and attention dropout of BERT and BudgetBert (BERT's default: 0.1); ModernBERT keeps "
            "its own (0)."
        },
    )
    encoder_ln_mode: str = field(default="pre-ln", metadata={"help": "BudgetBert's encoder_ln_mode."})
    budget_bert_overrides: str | None = field(
        default=None,
        metadata={
            "help": "BudgetBertConfig fields for the measured BudgetBert, as name=value pairs separated by commas "
            "(they win over --dropout and --encoder_ln_mode), e.g. mlp_type=glu,position_embedding_type=rope,"
            "linear_bias=false. With mlp_type=glu and no intermediate_size, the gated width is 2/3 of the preset's "
            "(the same parameters)."
        },
    )
    references: str = field(
        default="bert,modernbert",
        metadata={
            "help": f"Models to compare BudgetBert with, separated by commas, from {list(REFERENCES)}: stock BERT, "
            "stock ModernBERT (its own defaults, dropout 0), BudgetBert without the overrides."
        },
    )
    peak_tflops: float | None = field(
        default=None, metadata={"help": "Peak dense TFLOP/s of the device in this dtype; prints MFU when given."}
    )
    measure_peak: bool = field(
        default=False,
        metadata={
            "help": "Measure the device's dense matrix rate in this dtype (8192^3 products) and use it as the MFU "
            "peak instead of --peak_tflops."
        },
    )
    torch_compile: str = field(
        default="",
        metadata={
            "help": "Models to wrap in torch.compile (with --torch_compile_backend), from budget_bert and the "
            "--references, separated by commas, e.g. budget_bert with budget_bert_defaults among the references to "
            "measure what compiling gains. The warmup rounds take the compilation: give at least one."
        },
    )
    torch_compile_backend: str = field(
        default="inductor", metadata={"help": "torch.compile's backend for --torch_compile (aot_eager: no codegen)."}
    )
    threads: int | None = field(
        default=None, metadata={"help": "Torch intra-op threads (default: torch's choice, one per core)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for weights and batches."})
    output_json: str | None = field(default=None, metadata={"help": "Also write the results to this JSON file."})

    def __post_init__(self):
        problems = []
        if self.preset not in PRESETS:
            problems.append(f"--preset must be one of {sorted(PRESETS)}, got {self.preset!r}.")
        if self.dtype not in DTYPES:
            problems.append(f"--dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}.")
        for name in ("seq_len", "vocab_size", "rounds", "steps_per_round"):
            if getattr(self, name) <= 0:
                problems.append(f"--{name} must be positive, got {getattr(self, name)}.")
        if self.threads is not None and self.threads <= 0:
            problems.append(f"--threads must be positive, got {self.threads}.")
        if self.batch is not None and self.batch <= 0:
            problems.append(f"--batch must be positive, got {self.batch}.")
        if self.warmup_rounds < 0:
            problems.append(f"--warmup_rounds must be >= 0, got {self.warmup_rounds}.")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"--dropout must be in [0, 1), got {self.dropout}.")
        if not 0.0 < self.mlm_probability <= 1.0:
            problems.append(f"--mlm_probability must be in (0, 1], got {self.mlm_probability}.")
        unknown = [name for name in self.reference_names() if name not in REFERENCES]
        if unknown or not self.reference_names():
            problems.append(f"--references must name some of {list(REFERENCES)}, got {self.references!r}.")
        stray = [name for name in self.compiled_names() if name not in ["budget_bert", *self.reference_names()]]
        if stray:
            problems.append(f"--torch_compile names {stray}: neither budget_bert nor among --references.")
        if self.compiled_names() and self.warmup_rounds == 0:
            problems.append("--torch_compile needs --warmup_rounds >= 1: the first round compiles.")
        if not problems and self.preset in PRESETS:
            try:
                budget_bert_config(self)
            except (ValueError, StrictDataclassError) as error:
                problems.append(f"--budget_bert_overrides {self.budget_bert_overrides!r}: {error}")
        if problems:
            raise ValueError("\n".join(problems))
        if self.batch is None:
            self.batch = PRESETS[self.preset]["batch"]

    def reference_names(self) -> list[str]:
        """The names in `--references`, in order."""
        return [name.strip() for name in self.references.split(",") if name.strip()]

    def compiled_names(self) -> list[str]:
        """The names in `--torch_compile`, in order."""
        return [name.strip() for name in self.torch_compile.split(",") if name.strip()]


def model_shape(args: BenchmarkArguments) -> dict:
    """The preset's shape with the vocabulary and positions of `args` (BERT field names)."""
    shape = {k: v for k, v in PRESETS[args.preset].items() if k != "batch"}
    shape.update(vocab_size=args.vocab_size, max_position_embeddings=max(512, args.seq_len))
    return shape


def budget_bert_config(args: BenchmarkArguments, overridden: bool = True) -> BudgetBertConfig:
    """BudgetBert of the preset's shape, `--dropout` and `--encoder_ln_mode`, then (if `overridden`) the overrides;
    a gated MLP without an explicit `intermediate_size` gets `gated_intermediate_size` of the preset's."""
    dropout = dict(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
    kwargs = {**model_shape(args), **dropout, "encoder_ln_mode": args.encoder_ln_mode}
    if overridden:
        overrides = parse_overrides(args.budget_bert_overrides)
        if overrides.get("mlp_type") == "glu" and "intermediate_size" not in overrides:
            kwargs["intermediate_size"] = gated_intermediate_size(kwargs["intermediate_size"])
        kwargs.update(overrides)
    return BudgetBertConfig(**kwargs)


def modernbert_config(args: BenchmarkArguments) -> ModernBertConfig:
    """ModernBERT of the preset's shape (gated MLP of 2/3 the width) with its own defaults otherwise, predicting
    only the labelled positions, as BudgetBert does."""
    shape = model_shape(args)
    shape["intermediate_size"] = gated_intermediate_size(shape["intermediate_size"])
    return ModernBertConfig(**shape, **SPECIAL_TOKEN_IDS, sparse_prediction=True)


def build_models(args: BenchmarkArguments) -> dict[str, torch.nn.Module]:
    """BudgetBert (with the overrides) and the `--references`, on `args.device`, in training mode."""
    builders = {
        "budget_bert": lambda: BudgetBertForMaskedLM(budget_bert_config(args)),
        "bert": lambda: BertForMaskedLM(
            BertConfig(
                **model_shape(args), hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout
            )
        ),
        "modernbert": lambda: AutoModelForMaskedLM.from_config(modernbert_config(args), attn_implementation="sdpa"),
        "budget_bert_defaults": lambda: BudgetBertForMaskedLM(budget_bert_config(args, overridden=False)),
    }
    models = {}
    for name in ["budget_bert", *args.reference_names()]:
        torch.manual_seed(args.seed)
        models[name] = builders[name]().to(args.device).train()
    return models


def make_batches(args: BenchmarkArguments, count: int) -> list[dict[str, torch.Tensor]]:
    """`count` MLM batches: random token ids, full attention, `mlm_probability` of positions labelled."""
    generator = torch.Generator().manual_seed(args.seed)
    batches = []
    for _ in range(count):
        shape = (args.batch, args.seq_len)
        input_ids = torch.randint(5, args.vocab_size, shape, generator=generator)
        labelled = torch.rand(shape, generator=generator) < args.mlm_probability
        labels = torch.where(labelled, input_ids, torch.full_like(input_ids, -100))
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
        batches.append({k: v.to(args.device) for k, v in batch.items()})
    return batches


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """Parameters outside the embedding tables (tied weights counted once, as embeddings)."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids)


def flops_per_token(model: torch.nn.Module, args: BenchmarkArguments) -> float:
    """Training FLOPs per token: 6 * non-embedding parameters + 12 * layers * hidden * sequence length."""
    config = model.config
    return 6 * non_embedding_parameters(model) + 12 * config.num_hidden_layers * config.hidden_size * args.seq_len


def synchronizer(device: str):
    """A call that waits for the device's queued work: `torch.cuda.synchronize` on CUDA, nothing elsewhere."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


class Trainee:
    """One model with its AdamW optimizer, stepping through the shared batches.

    `attention_mask` says whether its steps get the batches' all-ones attention mask, as each model gets it in
    training: the stock MLM collator always makes one (the references), run_mlm.py's leaves it out of a batch
    without padding (BudgetBert).
    """

    def __init__(
        self, model: torch.nn.Module, args: BenchmarkArguments, compiled: bool = False, attention_mask: bool = True
    ):
        self.inputs = None if attention_mask else ("input_ids", "labels")
        self.model = torch.compile(model, backend=args.torch_compile_backend) if compiled else model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        device_type = torch.device(args.device).type
        dtype = DTYPES[args.dtype]
        self.autocast = (lambda: torch.autocast(device_type, dtype=dtype)) if dtype else nullcontext
        self.synchronize = synchronizer(args.device)

    def run(self, batches: list[dict[str, torch.Tensor]]) -> tuple[float, float]:
        """Train one step per batch; return the wall-clock and the process CPU seconds."""
        if self.inputs is not None:
            batches = [{name: batch[name] for name in self.inputs} for batch in batches]
        self.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            with self.autocast():
                loss = self.model(**batch).loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.synchronize()
        return time.perf_counter() - start, time.process_time() - start_cpu


def measure_matmul_tflops(args: BenchmarkArguments, size: int = 8192, repeats: int = 10) -> float:
    """The device's dense matrix-product rate in TFLOP/s: `repeats` timed size^3 products after three warm-ups."""
    dtype = DTYPES[args.dtype] or torch.float32
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    a, b = (torch.randn(size, size, device=args.device, dtype=dtype, generator=generator) for _ in range(2))
    synchronize = synchronizer(args.device)
    for _ in range(3):
        a @ b
    synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def benchmark(args: BenchmarkArguments) -> dict:
    """Interleave all models for `warmup_rounds + rounds` rounds; return medians and, per reference, the ratio of
    BudgetBert's throughput to the reference's."""
    models = build_models(args)
    compiled = args.compiled_names()
    trainees = {name: Trainee(model, args, name in compiled, attention_mask=not name.startswith("budget_bert"))
                for name, model in models.items()}
    references = args.reference_names()
    batches = make_batches(args, args.steps_per_round)
    tokens_per_round = args.batch * args.seq_len * args.steps_per_round
    throughput = {name: [] for name in trainees}
    ratios = {name: [] for name in references}
    cpu_ratios = {name: [] for name in references}
    names = list(trainees)
    for round_index in range(args.warmup_rounds + args.rounds):
        shift = round_index % len(names)
        seconds = {name: trainees[name].run(batches) for name in names[shift:] + names[:shift]}
        if round_index < args.warmup_rounds:
            continue
        for name in trainees:
            throughput[name].append(tokens_per_round / seconds[name][0])
        for name in references:
            ratios[name].append(seconds[name][0] / seconds["budget_bert"][0])
            cpu_ratios[name].append(seconds[name][1] / seconds["budget_bert"][1])
        print(
            f"round {round_index - args.warmup_rounds + 1}/{args.rounds}: "
            + ", ".join(f"{name} {throughput[name][-1]:,.0f} tok/s" for name in trainees)
            + "; budget_bert / "
            + ", ".join(f"{name} {ratios[name][-1]:.3f} (CPU time {cpu_ratios[name][-1]:.3f})" for name in references),
            flush=True,
        )
    results = {
        "args": asdict(args),
        "tokens_per_second": {name: statistics.median(values) for name, values in throughput.items()},
        "ratio": {name: statistics.median(values) for name, values in ratios.items()},
        "cpu_time_ratio": {name: statistics.median(values) for name, values in cpu_ratios.items()},
        "ratios": ratios,
    }
    if torch.device(args.device).type == "cuda":
        results["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(args.device) / 2**30
    if args.measure_peak:
        args.peak_tflops = measure_matmul_tflops(args)
        results["measured_peak_tflops"] = args.peak_tflops
    if args.peak_tflops:
        results["mfu"] = {
            name: results["tokens_per_second"][name] * flops_per_token(models[name], args) / (args.peak_tflops * 1e12)
            for name in models
        }
    return results


def main():
    """Parse the flags, run the benchmark, print (and optionally save) the results."""
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"preset {args.preset}, batch {args.batch} x seq {args.seq_len}, {args.dtype} on {args.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"budget_bert overrides: {parse_overrides(args.budget_bert_overrides) or 'none'}; "
        f"compiled: {', '.join(args.compiled_names()) or 'none'}",
        flush=True,
    )
    results = benchmark(args)
    if "max_memory_allocated_gib" in results:
        gib = results["max_memory_allocated_gib"]
        print(f"peak GPU memory allocated (both models and their optimizers): {gib:.1f} GiB")
    if "measured_peak_tflops" in results:
        print(f"measured {args.dtype} matrix rate: {results['measured_peak_tflops']:,.1f} TFLOP/s (the MFU peak)")
    width = max(map(len, results["tokens_per_second"]))
    for name, value in results["tokens_per_second"].items():
        mfu = f", MFU {results['mfu'][name]:.1%}" if "mfu" in results else ""
        print(f"{name:>{width}}: {value:,.0f} tokens/s (median of {args.rounds} rounds){mfu}")
    for name, ratio in results["ratio"].items():
        print(
            f"budget_bert / {name}: {ratio:.2f}x (median of per-round ratios; "
            f"{results['cpu_time_ratio'][name]:.2f}x in process CPU time)"
        )
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
