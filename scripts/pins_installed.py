"""Exit 0 when every NAME==VERSION given is installed at that version, 1 otherwise.

The install scripts ask this before calling pip, whose own check is slow.
"""

import sys
from importlib.metadata import PackageNotFoundError, version

for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
