"""Keep secrets (the Hub token) out of saved arguments, command lines, model cards and logs.

A secret argument is one whose name ends in `_token` or is `token`, the rule `TrainingArguments.to_dict` uses
for `hub_token`; its value is replaced by `<NAME>` (`<HUB_TOKEN>`), as transformers writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any


def is_secret_name(name: str) -> bool:
    """Whether an argument called `name` (with or without leading dashes) holds a secret."""
    name = name.lstrip("-").replace("-", "_").lower()
    return name == "token" or name.endswith("_token")


def _placeholder(name: str) -> str:
    return f"<{name.lstrip('-').replace('-', '_').upper()}>"


def redact_secrets(value: Mapping[str, Any] | Sequence[str]) -> dict[str, Any] | list[str]:
    """Return a copy of `value` with every secret replaced by a placeholder.

    Args:
        value: either a mapping of argument names to values (nested mappings are redacted too), or a command
            line (`sys.argv`-like list) where `--hub_token X` and `--hub_token=X` are redacted.

    Returns:
        A new dict or list; `value` itself is left untouched. Secrets that are `None` stay `None`.
    """
    if isinstance(value, Mapping):
        return {
            key: (_placeholder(key) if item is not None else None) if is_secret_name(str(key))
            else redact_secrets(item) if isinstance(item, Mapping) else item
            for key, item in value.items()
        }
    redacted: list[str] = []
    hide_next = None
    for argument in value:
        argument = str(argument)
        if hide_next is not None:
            redacted.append(_placeholder(hide_next))
            hide_next = None
        elif argument.startswith("-") and "=" in argument and is_secret_name(argument.split("=", 1)[0]):
            name = argument.split("=", 1)[0]
            redacted.append(f"{name}={_placeholder(name)}")
        else:
            redacted.append(argument)
            if argument.startswith("-") and is_secret_name(argument):
                hide_next = argument
    return redacted


def redact_text(text: str, secrets: Sequence[str]) -> str:
    """Replace every occurrence of each secret string in `text` by `<SECRET>`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<SECRET>")
    return text


_LOG_SECRETS: list[str] = []


def install_log_redaction(secret: str | None) -> None:
    """Make every log record created from now on, by any logger, hide `secret`.

    The record factory is wrapped once per process; later calls only add secrets. Each record's message is
    formatted and redacted when it is created, so handlers added later (e.g. by `logging.basicConfig` in a
    script) are covered too.
    """
    if not secret or secret in _LOG_SECRETS:
        return
    if not _LOG_SECRETS:
        make_record = logging.getLogRecordFactory()

        def redacting_factory(*args, **kwargs) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            message = record.getMessage()
            redacted = redact_text(message, _LOG_SECRETS)
            if redacted != message:
                record.msg, record.args = redacted, None
            return record

        logging.setLogRecordFactory(redacting_factory)
    _LOG_SECRETS.append(secret)
