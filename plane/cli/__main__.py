"""``python -m plane.cli ...``: the same as the ``mesh`` command."""

from plane.cli.parser import main

main()
