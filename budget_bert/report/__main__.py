"""`python -m budget_bert.report`: see `budget_bert.report.run_report`."""

from budget_bert.report.run_report import main


main()
