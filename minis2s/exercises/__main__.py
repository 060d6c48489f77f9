"""``python -m minis2s.exercises list | show N | check N``."""
import sys

from .runner import main

sys.exit(main())
