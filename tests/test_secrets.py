"""Secrets are redacted from argument dicts, command lines and log records."""

import logging

import pytest

from budget_bert.hub.redaction import install_log_redaction, is_secret_name, redact_secrets, redact_text


SECRET = "hf_redactionTestSecret42"


@pytest.mark.parametrize(
    ("name", "secret"),
    [("hub_token", True), ("--hub_token", True), ("--hub-token", True), ("token", True), ("HF_TOKEN", True),
     ("use_auth_token", True), ("api-secret", True), ("db_password", True), ("tokenizer_name", False),
     ("max_tokens", False), ("include_num_input_tokens_seen", False), ("push_to_hub", False)],
)
def test_secret_names_are_those_with_a_secret_word(name, secret):
    assert is_secret_name(name) is secret


def test_a_dict_keeps_everything_but_its_secrets():
    arguments = {"hub_token": SECRET, "hub_model_id": "me/x", "deepspeed": {"api_token": SECRET}, "push_token": None}

    redacted = redact_secrets(arguments)

    assert redacted == {
        "hub_token": "<HUB_TOKEN>", "hub_model_id": "me/x", "deepspeed": {"api_token": "<API_TOKEN>"},
        "push_token": None,
    }
    assert arguments["hub_token"] == SECRET  # the input is not modified


def test_secrets_nested_in_lists_are_redacted():
    arguments = {"runs": [{"HF_TOKEN": SECRET, "kept": 1}], "argv": ["--hub_token", SECRET], "report_to": ["none"]}

    assert redact_secrets(arguments) == {
        "runs": [{"HF_TOKEN": "<HF_TOKEN>", "kept": 1}], "argv": ["--hub_token", "<HUB_TOKEN>"], "report_to": ["none"]
    }


def test_a_command_line_hides_both_spellings_of_a_secret_flag():
    argv = ["run_mlm.py", "--hub_token", SECRET, "--hub_model_id", "me/x", f"--hub-token={SECRET}", "--push_to_hub"]

    redacted = redact_secrets(argv)

    assert redacted == [
        "run_mlm.py", "--hub_token", "<HUB_TOKEN>", "--hub_model_id", "me/x", "--hub-token=<HUB_TOKEN>",
        "--push_to_hub",
    ]
    assert SECRET not in " ".join(redacted)


def test_redact_text_replaces_every_occurrence():
    assert redact_text(f"a {SECRET} b {SECRET}", [SECRET, ""]) == "a <SECRET> b <SECRET>"


def test_log_records_from_any_logger_hide_an_installed_secret(caplog):
    install_log_redaction(SECRET)
    install_log_redaction(SECRET)  # idempotent

    # The logger is named: a script run in-process before (run_glue.main) may have set the package's level.
    with caplog.at_level(logging.INFO, logger="budget_bert.test"):
        logging.getLogger("some.library").warning("calling with token %s", SECRET)
        logging.getLogger("budget_bert.test").info(f"Authorization: Bearer {SECRET}")

    assert len(caplog.records) == 2
    assert SECRET not in caplog.text
    assert "calling with token <SECRET>" in caplog.text
