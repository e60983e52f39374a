"""`--torch_compile` with BudgetBert under the stock Trainer: the training step is one graph, and what is saved is the
plain model (no `_orig_mod.` names) carrying the compiled run's weights.

The Trainer compiles with `fullgraph=False`, which turns anything dynamo cannot trace into a silent graph break, so
the tests read dynamo's graph-break counter instead of relying on an error. They compile with the `aot_eager`
backend: dynamo's capture and AOTAutograd's forward/backward split (where graph breaks and tracing failures
appear) without inductor's code generation, which takes minutes on a small CPU (`bench/gpu_check.sh --dry-run`
runs inductor).
"""

import json

import pytest
import torch
from safetensors import safe_open
from torch._dynamo.utils import counters

from budget_bert import BudgetBertForMaskedLM
from modeling_fixtures import tiny_config
from pretraining_fixtures import (  # noqa: F401 - fixture
    REPO, TINY_MODEL_FLAGS, fake_clock, import_run_mlm, one_process_env, prepared_data,
)
from trainer_callbacks.snapshots import END_SNAPSHOT_NAME, SNAPSHOTS_DIR



@pytest.fixture
def fresh_dynamo():
    """Dynamo with no compiled code and zeroed counters, before and after the test."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()
    counters.clear()


def test_a_cpu_training_step_with_dropout_and_the_sparse_head_compiles_without_graph_breaks(fresh_dynamo):
    # The CPU dropout's in-place draw and the sparse head's `nonzero` each broke the graph under fullgraph=False.
    torch.manual_seed(0)
    model = BudgetBertForMaskedLM(tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)).train()
    compiled = torch.compile(model, backend="eager")  # as the Trainer calls it: fullgraph=False
    for count in (3, 7):  # two counts of labelled tokens: one graph for both
        input_ids = torch.randint(5, model.config.vocab_size, (2, 10))
        labels = torch.full_like(input_ids, -100)
        labels.view(-1)[:count] = input_ids.view(-1)[:count]
        loss = compiled(input_ids, labels=labels, num_items_in_batch=torch.tensor(count)).loss
        loss.backward()
        assert torch.isfinite(loss)
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1


def test_run_mlm_with_torch_compile_trains_in_one_graph_and_saves_the_plain_model(
    prepared_data, tmp_path, fresh_dynamo  # noqa: F811 - fixture
):
    output_dir = tmp_path / "out"
    argv = [
        "--dataset_path", str(prepared_data.dataset), "--output_dir", str(output_dir), *TINY_MODEL_FLAGS,
        "--lr", "1e-3", "--train_micro_batch_size_per_gpu", "8", "--print_steps", "1", "--disable_tqdm", "true",
        "--total_training_time", repr(6 / 3600), "--finetune_time_markers", "0.5", "--do_validation",
        "--torch_compile", "--torch_compile_backend", "aot_eager", "--seed", "3",
    ]
    import_run_mlm().main(argv, clock=fake_clock(argv))

    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] >= 1  # the model did run compiled
    state = json.loads((output_dir / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert state["global_step"] == len(losses) >= 5
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert any("eval_loss" in entry for entry in state["log_history"])

    snapshots = output_dir / SNAPSHOTS_DIR
    weights = {}
    for name in ("marker-0.50", END_SNAPSHOT_NAME):
        with safe_open(snapshots / name / "model.safetensors", framework="pt") as saved:
            assert not [key for key in saved.keys() if "_orig_mod" in key]
        model = BudgetBertForMaskedLM.from_pretrained(snapshots / name)
        weights[name] = model.budget_bert.embeddings.word_embeddings.weight
    # The compiled steps between the marker and the end trained the weights that were saved.
    assert not torch.equal(weights["marker-0.50"], weights[END_SNAPSHOT_NAME])


def test_under_deepspeed_the_forward_compiles_alone_and_deepspeeds_hooks_run_eagerly(
    prepared_data, tmp_path, fresh_dynamo, monkeypatch  # noqa: F811 - fixture
):
    # accelerate's engine.compile() would trace DeepSpeed's forward hooks with the model: on torch 2.11 with CUDA
    # they broke the training step's graph seven times (bench/gpu_check.sh). Here the hooks must run outside it.
    deepspeed = pytest.importorskip("deepspeed")
    engine_class = deepspeed.runtime.engine.DeepSpeedEngine
    prologue, compiling = engine_class._forward_prologue, []

    def recording_prologue(self, inputs, kwargs):
        compiling.append(torch.compiler.is_compiling())
        return prologue(self, inputs, kwargs)

    monkeypatch.setattr(engine_class, "_forward_prologue", recording_prologue)
    for name, value in one_process_env().items():
        monkeypatch.setenv(name, value)
    output_dir = tmp_path / "out"
    argv = [
        "--dataset_path", str(prepared_data.dataset), "--output_dir", str(output_dir), *TINY_MODEL_FLAGS,
        "--lr", "1e-3", "--train_micro_batch_size_per_gpu", "8", "--print_steps", "1", "--disable_tqdm", "true",
        "--total_training_time", repr(4 / 3600), "--deepspeed", str(REPO / "ds_configs" / "zero1.json"),
        "--torch_compile", "--torch_compile_backend", "aot_eager", "--seed", "3",
    ]
    try:
        import_run_mlm().main(argv, clock=fake_clock(argv))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    steps = json.loads((output_dir / "trainer_state.json").read_text())["global_step"]
    assert steps >= 3 and len(compiling) >= steps and not any(compiling)
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1
