"""Keep secrets (the Hub token) out of saved arguments, command lines, model cards and logs.

A secret argument is one whose name has the word `token`, `secret` or `password` in it (`hub_token`, `HF_TOKEN`,
`--hub-token`, `api_secret`; not `tokenizer_name` or `max_tokens`), which covers the rule
`TrainingArguments.to_dict` uses for `hub_token`; its value is replaced by `<NAME>` (`<HUB_TOKEN>`), as
transformers writes it, so a reader still sees that one was given.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any


_SECRET_WORDS = frozenset({"token", "secret", "password"})


def is_secret_name(name: str) -> bool:
    """Whether an argument called `name` (with or without leading dashes) holds a secret."""
    return not _SECRET_WORDS.isdisjoint(re.split(r"[^a-z0-9]+", name.lower()))


def _placeholder(name: str) -> str:
    return f"<{name.lstrip('-').replace('-', '_').upper()}>"


def redact_secrets(value: Any) -> Any:
    """Return a copy of `value` with every secret replaced by a placeholder.

    Args:
        value: a mapping of argument names to values (e.g. `TrainingArguments.to_dict()`), a command line
            (`sys.argv`-like list, where `--hub_token X` and `--hub_token=X` are redacted), or anything nesting
            them in mappings and lists; other values come back as they are.

    Returns:
        A new dict or list; `value` itself is left untouched. Secrets that are `None` stay `None`.
    """
    if isinstance(value, Mapping):
        return {
            key: (None if item is None else _placeholder(str(key)))
            if is_secret_name(str(key))
            else redact_secrets(item)
            for key, item in value.items()
        }
    if not isinstance(value, (list, tuple)):
        return value
    redacted: list[Any] = []
    hide_next = None
    for item in value:
        if hide_next is not None:
            redacted.append(_placeholder(hide_next))
            hide_next = None
        elif not isinstance(item, str):
            redacted.append(redact_secrets(item))
        elif item.startswith("-") and "=" in item and is_secret_name(item.split("=", 1)[0]):
            name = item.split("=", 1)[0]
            redacted.append(f"{name}={_placeholder(name)}")
        else:
            redacted.append(item)
            if item.startswith("-") and is_secret_name(item):
                hide_next = item
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
