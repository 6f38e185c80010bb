"""pytest on CPython: import the firmware from this tree and the helpers beside the tests."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parents[1] / "firmware"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
