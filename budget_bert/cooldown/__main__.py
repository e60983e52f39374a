"""`python -m budget_bert.cooldown`: see `budget_bert.cooldown.cooldown_command`."""

from budget_bert.cooldown.cooldown_command import cli


cli()
