"""What `run_mlm.py` runs on: its arguments (checked once, at parse time), the build of the tokenizer, data, model,
callbacks and Trainer, the output folder checks, and what a preempted run says to resume.

Import the submodules by their full path (`from budget_bert.pretraining.build import build_trainer`).
"""
