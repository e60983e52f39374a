"""The run report: `python -m budget_bert.report OUTPUT_DIR` plots a pretraining run's curves and summarises it.

The report is built by `budget_bert.report.run_report`.
"""
