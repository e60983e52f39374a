"""`python -m budget_bert.demo`: see `budget_bert.demo.pipeline`."""

from budget_bert.demo.pipeline import main


main()
