"""The main job: `python -m budget_bert.demo` pretrains a small BudgetBert in a time budget and finetunes it, offline.

The stages live in `budget_bert.demo.pipeline`.
"""
