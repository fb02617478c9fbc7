"""``python -m steadytune``: the same as the ``steadytune`` command."""

from steadytune.cli.app import main

main()
