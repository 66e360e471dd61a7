"""`python -m pipeline`: the `mt` command without its console script (a bare checkout, CI)."""

import sys

from pipeline.cli import main

# Guarded so that importing this module (pydoc, a walk over every module) runs nothing.
if __name__ == "__main__":
    sys.exit(main())
