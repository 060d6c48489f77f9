"""``python -m minis2s`` is the ``minis2s`` command."""
import sys

from .cli import main

sys.exit(main())
