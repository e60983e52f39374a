"""Cooldowns: the models of shorter budgets from one warmup-stable-decay run (`python -m budget_bert.cooldown`).

`budget_bert.cooldown.cooldown_runs` says which marker checkpoints of a `--curve wsd` run can be cooled down and
with which `run_mlm.py` flags; `budget_bert.cooldown.cooldown_command` runs them.
"""
