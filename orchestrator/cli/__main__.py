"""``python -m orchestrator.cli``: the same as the ``gmi-fsm`` console script."""

from orchestrator.cli.main import main

main()
