"""`python -m emofuse ...`: the command line, also as torchrun starts it (`torchrun ... -m emofuse train`)."""

import sys

from emofuse.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
