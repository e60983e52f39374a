"""A pushed snapshot loads from its branch with the Auto classes in a fresh process, with the local weights."""

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

import budget_bert
from budget_bert.hub.model_card import ModelCardInfo
from budget_bert.hub.pusher import SnapshotPusher
from hub_server import hub_env, hub_server, make_snapshot  # noqa: F401 - fixtures


REPO = "fake-user/bert-24h"

# Runs in a fresh process that knows the Hub only through HF_ENDPOINT, and must not import budget_bert: the
# BudgetBert snapshot has to load through the code pushed with it.
LOADER = """
import json, sys
from safetensors.torch import save_file
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

repo, out = sys.argv[1], sys.argv[2]
report = {}
for branch in ("marker-0.50", "end"):
    masked = AutoModelForMaskedLM.from_pretrained(repo, revision=branch, trust_remote_code=True)
    classifier = AutoModelForSequenceClassification.from_pretrained(repo, revision=branch, trust_remote_code=True,
                                                                    num_labels=3)
    tokenizer = AutoTokenizer.from_pretrained(repo, revision=branch)
    save_file({k: v.clone() for k, v in masked.state_dict().items()}, f"{out}/{branch}-masked.safetensors")
    save_file({k: v.clone() for k, v in classifier.state_dict().items()}, f"{out}/{branch}-classifier.safetensors")
    report[branch] = {"masked": type(masked).__module__ + "." + type(masked).__name__,
                      "classifier": type(classifier).__name__, "vocab": tokenizer.get_vocab()}
report["imported_budget_bert"] = "budget_bert" in sys.modules
with open(f"{out}/report.json", "w") as file:
    json.dump(report, file)
"""


def test_pushed_branches_load_with_the_auto_classes_in_a_fresh_process(hub_env, tmp_path):
    snapshots = tmp_path / "out" / "finetune_snapshots"
    bert = make_snapshot(snapshots / "marker-0.50", seed=1)
    budget = make_snapshot(snapshots / "end", model_class=budget_bert.BudgetBertForMaskedLM, seed=2)
    pusher = SnapshotPusher(REPO, token=hub_env.token)
    for folder in (bert, budget):
        pusher.submit(folder, card_info=ModelCardInfo(tokens_seen=1024))
    assert pusher.close(timeout=60).all_pushed

    result = subprocess.run(
        [sys.executable, "-c", LOADER, REPO, str(tmp_path)], capture_output=True, text=True, cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report.pop("imported_budget_bert") is False
    assert report["marker-0.50"]["masked"] == "transformers.models.bert.modeling_bert.BertForMaskedLM"
    assert report["end"]["masked"].startswith("transformers_modules.")
    assert report["end"]["masked"].endswith("modeling_budget_bert.BudgetBertForMaskedLM")
    assert report["end"]["classifier"] == "BudgetBertForSequenceClassification"
    for branch, folder in (("marker-0.50", bert), ("end", budget)):
        local = load_file(folder / "model.safetensors")
        masked = load_file(tmp_path / f"{branch}-masked.safetensors")
        classifier = load_file(tmp_path / f"{branch}-classifier.safetensors")
        assert all(torch.equal(masked[name], tensor) for name, tensor in local.items())
        # The classifier gets the snapshot's embeddings and encoder layers; its head is new.
        encoder = {name: tensor for name, tensor in local.items() if ".embeddings." in name or ".encoder." in name}
        assert encoder and all(torch.equal(classifier[name], tensor) for name, tensor in encoder.items())
        assert report[branch]["vocab"] == json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    assert hub_env.repo(REPO).files("main") == hub_env.repo(REPO).files("end")
    assert hub_env.unknown_routes == []
