"""`python -m benchmarks.quality`: the quality study (see `benchmarks.quality` for what it does and its commands)."""

import sys

from .run import main


if __name__ == "__main__":
    main(sys.argv[1:])
