# A package so pytest imports these as firmware.test_* (no clash with same-named host tests,
# and this directory's conftest.py does not replace tests/conftest.py as module "conftest").
# The MicroPython runner (run.py) imports the modules by their bare names instead.
