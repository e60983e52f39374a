"""GLUE finetuning for budget-bert snapshots and any Auto-class model.

`run_glue.py` (repo root) finetunes one model on one task; `glue_sweep.py` (repo root) runs a grid of
finetunings and writes the tables. The pieces, imported by full path (`from budget_bert.glue.metrics import
glue_metrics`): `tasks` (the nine tasks and their headline metrics), `metrics` (offline GLUE metrics),
`glue_arguments` (run_glue.py's flags), `glue_data` (loading, labels, tokenizing), `model`, `runtime` (the steps
around the Trainer), `sweep` and `results` (the sweep and its tables).
"""
