"""``python -m tssd_fast.train``: see ``--help`` and docs/TRAINING.md."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
