"""Module calibration: colour (ColorChecker -> colour matrix, CIEDE2000) and lens shading
(flat fields -> per-CFA-site gain grids), written into the module descriptor.

One module per concern: ``colorchecker`` (reference data, sampling, detection), ``color``
(matrix fit, errors), ``shading`` (gain maps). See docs/calibration.md.
"""
