"""``python -m cinedub_cli``: the ``cinedub`` command."""

from cinedub_cli.main import main

main()
