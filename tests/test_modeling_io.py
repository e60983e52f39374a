"""BudgetBert on disk: Auto classes, safetensors, remote code in a fresh process, fill-mask, resizing; each with
every architecture option set of `modeling_fixtures.OPTION_SETS`."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PreTrainedTokenizerFast,
    pipeline,
)

from budget_bert import BudgetBertConfig, BudgetBertForMaskedLM, BudgetBertForSequenceClassification, BudgetBertModel
from budget_bert.configuration_budget_bert import DEFAULT_AUTO_MAP
from budget_bert.modeling_budget_bert import BudgetBertDecoder
from modeling_fixtures import OPTION_SETS
from modeling_fixtures import TINY as SHARED_TINY
from modeling_fixtures import tiny_config as shared_tiny_config


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an cat dog bird fish sat ran flew swam on in under over mat tree sky sea big small red blue green old "
    "young happy sad fast slow and or but is was are were it he she they we you this that there here now then"
).split()
TINY = {**SHARED_TINY, "vocab_size": len(SPECIAL_TOKENS) + len(WORDS)}


def tiny_config(**overrides) -> BudgetBertConfig:
    return shared_tiny_config(**{"vocab_size": TINY["vocab_size"], **overrides})


def word_piece_tokenizer() -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer over SPECIAL_TOKENS + WORDS, built offline."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + WORDS)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def save_mlm(path, options: dict):
    """Save a tiny BudgetBertForMaskedLM with `options` (vocabulary 54, padded to 56 rows) to `path`; return the
    model, an input and its logits."""
    torch.manual_seed(0)
    model = BudgetBertForMaskedLM(tiny_config(**options)).eval()
    model.save_pretrained(path)
    input_ids = torch.randint(5, TINY["vocab_size"], (2, 9))
    with torch.no_grad():
        logits = model(input_ids).logits
    return model, input_ids, logits


@pytest.fixture(params=OPTION_SETS)
def saved_mlm(tmp_path, request):
    """`save_mlm` in tmp_path/model, once per option set: (path, model, input_ids, logits)."""
    return tmp_path / "model", *save_mlm(tmp_path / "model", request.param)


def test_import_registers_the_auto_classes():
    config = AutoConfig.for_model("budget-bert", **TINY)
    assert isinstance(config, BudgetBertConfig)
    assert type(AutoModel.from_config(config)) is BudgetBertModel
    assert type(AutoModelForMaskedLM.from_config(config)) is BudgetBertForMaskedLM
    assert type(AutoModelForSequenceClassification.from_config(config)) is BudgetBertForSequenceClassification


def test_saved_folder_holds_safetensors_the_code_and_a_full_auto_map(saved_mlm):
    path, _, _, _ = saved_mlm
    assert {"config.json", "model.safetensors", "configuration_budget_bert.py", "modeling_budget_bert.py"} <= set(
        os.listdir(path)
    )
    assert json.loads((path / "config.json").read_text())["auto_map"] == DEFAULT_AUTO_MAP


def test_auto_classes_reload_the_saved_weights(saved_mlm):
    path, model, input_ids, logits = saved_mlm
    reloaded = AutoModelForMaskedLM.from_pretrained(path)
    assert type(reloaded) is BudgetBertForMaskedLM
    assert reloaded.lm_head.decoder.weight is reloaded.budget_bert.embeddings.word_embeddings.weight
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids).logits, logits)
    encoder = AutoModel.from_pretrained(path)
    classifier = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    for loaded in (encoder.state_dict(), classifier.budget_bert.state_dict()):
        for name, tensor in model.budget_bert.state_dict().items():
            torch.testing.assert_close(loaded[name], tensor)


def test_eager_attention_loads_from_pretrained_and_matches_sdpa(saved_mlm):
    path, _, input_ids, logits = saved_mlm
    eager = AutoModelForMaskedLM.from_pretrained(path, attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"
    with torch.no_grad():
        torch.testing.assert_close(eager(input_ids).logits, logits, atol=1e-5, rtol=1e-5)


# Runs where budget_bert cannot be imported (it is installed editable in the venv, so a finder refuses it), and
# loads every head of every folder through the copied code. Arguments: pairs of (folder, expected input/logits).
FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys

    class RefuseBudgetBert:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "budget_bert":
                raise ImportError(f"{name} is not importable in this test")
            return None

    sys.meta_path.insert(0, RefuseBudgetBert())
    try:
        import budget_bert
    except ImportError:
        pass
    else:
        sys.exit("budget_bert is importable: the test would prove nothing")

    import torch
    from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    for path, expected_path in zip(sys.argv[1::2], sys.argv[2::2]):
        input_ids, expected = torch.load(expected_path)
        model = AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids).logits, expected)
        for auto_class in (AutoModel, AutoModelForSequenceClassification):
            auto_class.from_pretrained(path, trust_remote_code=True)
    assert not any(name.startswith("budget_bert") for name in sys.modules)
    print("remote code OK")
    """
)


def test_a_fresh_process_without_budget_bert_loads_the_folders_with_trust_remote_code(tmp_path):
    arguments = []
    for index, options in enumerate(option_set.values[0] for option_set in OPTION_SETS):
        _, input_ids, logits = save_mlm(tmp_path / f"model_{index}", options)
        torch.save((input_ids, logits), tmp_path / f"expected_{index}.pt")
        arguments += [str(tmp_path / f"model_{index}"), str(tmp_path / f"expected_{index}.pt")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, *arguments],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "remote code OK" in result.stdout


def test_fill_mask_pipeline_predicts_only_real_tokens(saved_mlm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path, model, _, _ = saved_mlm
    word_piece_tokenizer().save_pretrained(path)
    fill_mask = pipeline("fill-mask", model=str(path), device="cpu")
    text = "the cat sat on the [MASK] ."
    predictions = fill_mask(text, top_k=TINY["vocab_size"])
    assert len(predictions) == TINY["vocab_size"]
    assert all(p["token"] < TINY["vocab_size"] for p in predictions)
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-4)
    inputs = fill_mask.tokenizer(text, return_tensors="pt")
    mask_position = (inputs["input_ids"][0] == fill_mask.tokenizer.mask_token_id).nonzero().item()
    with torch.no_grad():
        logits = model(**inputs).logits[0, mask_position]
    assert predictions[0]["token"] == int(logits.argmax())


def test_resize_token_embeddings_keeps_rows_padded_and_the_folder_reloadable(saved_mlm, tmp_path):
    _, model, input_ids, logits = saved_mlm
    old_rows = model.budget_bert.embeddings.word_embeddings.weight[: TINY["vocab_size"]].detach().clone()
    model.resize_token_embeddings(TINY["vocab_size"] + 7, mean_resizing=False)
    new_vocab = TINY["vocab_size"] + 7
    assert model.config.vocab_size == new_vocab
    assert model.budget_bert.embeddings.word_embeddings.weight.shape[0] == 64
    decoder_bias = model.lm_head.decoder.bias
    assert (decoder_bias is None) if not model.config.decoder_bias else decoder_bias.shape == (64,)
    assert model.lm_head.decoder.weight is model.budget_bert.embeddings.word_embeddings.weight
    assert isinstance(model.lm_head.decoder, BudgetBertDecoder) and model.lm_head.decoder.vocab_size == new_vocab
    padded_logits = model.lm_head(torch.randn(2, TINY["hidden_size"]))
    assert torch.isfinite(padded_logits[:, :new_vocab]).all() and torch.isneginf(padded_logits[:, new_vocab:]).all()
    torch.testing.assert_close(model.budget_bert.embeddings.word_embeddings.weight[: TINY["vocab_size"]], old_rows)
    with torch.no_grad():
        resized_logits = model(input_ids).logits
    assert resized_logits.shape[-1] == new_vocab
    torch.testing.assert_close(resized_logits[..., : TINY["vocab_size"]], logits)
    model.save_pretrained(tmp_path / "resized")
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "resized")
    assert reloaded.config.vocab_size == new_vocab
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids).logits, resized_logits)
