"""Restoring a callback's exported state from `trainer_state.json` without re-creating the callback."""

from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState


def restore_exported_attributes(state: TrainerState, callback: ExportableState) -> dict[str, Any]:
    """
    The `attributes` that `callback` exported into `state.stateful_callbacks`.

    The Trainer fills `state.stateful_callbacks` before `on_train_begin`: from `trainer_state.json` when it resumes
    from a checkpoint, from the callbacks' own `state()` otherwise. Reading it in `on_train_begin` therefore restores
    a resumed run and is a no-op on a fresh one. The budget callbacks share a clock object that JSON cannot carry,
    so they restore themselves this way instead of through `--restore_callback_states_from_checkpoint`.

    A checkpoint written without this callback has no entry for it; one is added so that the Trainer can write the
    callback's state into the next checkpoint (it expects an entry for every exportable callback).
    """
    name = type(callback).__name__
    saved = state.stateful_callbacks.setdefault(name, callback.state())
    if isinstance(saved, list):
        raise ValueError(f"Only one {name} per Trainer is supported; the state holds {len(saved)}.")
    return saved.get("attributes", {})


def saved_attributes(stateful_callbacks: Mapping[str, Any], callback_class: type) -> dict[str, Any] | None:
    """
    The `attributes` that a callback of `callback_class` exported into `stateful_callbacks` (of a saved
    `trainer_state.json`, read as a dict), or `None` when no such callback was exported.
    """
    saved = stateful_callbacks.get(callback_class.__name__)
    return saved.get("attributes") if isinstance(saved, Mapping) else None


class RestoresOwnState(TrainerCallback):
    """
    Base of the callbacks that restore their own state in `on_train_begin` (see [`restore_exported_attributes`]).

    The Trainer's `--restore_callback_states_from_checkpoint` would instead re-create them from JSON arguments,
    losing the shared clock: it is refused when the Trainer is built.
    """

    def on_init_end(self, args: TrainingArguments, state, control, **kwargs):
        if args.restore_callback_states_from_checkpoint:
            raise ValueError(
                f"{type(self).__name__} restores its own state from trainer_state.json when training resumes; "
                "--restore_callback_states_from_checkpoint would re-create it without its clock: leave that flag "
                "off (the default)."
            )
