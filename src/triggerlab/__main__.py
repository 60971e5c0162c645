"""``python -m triggerlab``: the same command line as the ``triggerlab`` script."""

from triggerlab.cli import entry

entry()
