#!/usr/bin/env python
"""Finetune a snapshot over a grid of GLUE tasks, learning rates, batch sizes and seeds; write the tables.

    python glue_sweep.py --model_name_or_path <snapshot> --output_dir <sweep> --tasks mrpc rte \
        --learning_rates 5e-5 1e-4 --batch_sizes 16 32 --seeds 1 2 3 4 5 [-- run_glue.py flags]
    python glue_sweep.py sweep.yaml

Rerunning the same command skips finished runs. See `budget_bert.glue.sweep` for the flags, the YAML file and
the run layout, and `budget_bert.glue.results` for how the tables score a task (the paper's median of the
best configuration).
"""

import sys
from functools import partial
from pathlib import Path

from budget_bert.cli import run_cli
from budget_bert.glue.sweep import main


if __name__ == "__main__":
    sys.exit(run_cli("glue_sweep.py", partial(main, run_glue_script=Path(__file__).resolve().with_name("run_glue.py"))))
