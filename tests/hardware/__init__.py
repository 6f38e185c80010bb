"""Hardware-in-the-loop tests (a package, like tests/firmware, so its conftest does not shadow tests/conftest.py)."""
