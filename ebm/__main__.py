"""``python -m ebm``: the ``ebm`` command (so that ``torchrun -m ebm train ...`` works)."""

import sys

from ebm.cli import main

if __name__ == "__main__":
    sys.exit(main())
