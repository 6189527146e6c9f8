"""``python -m e2wm``: the ``e2wm`` command."""

from e2wm.cli import main

main()
