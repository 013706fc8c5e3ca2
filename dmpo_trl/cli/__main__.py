"""`python -m dmpo_trl.cli COMMAND ...`, as `dmpo-trl COMMAND ...` (torchrun runs it this way)."""

import sys

from dmpo_trl.cli import main


if __name__ == "__main__":
    sys.exit(main())
