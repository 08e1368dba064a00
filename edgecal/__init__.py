"""edgecal: ncnn int8 calibration, conversion and validation, run where the model runs."""

__version__ = "0.1.0"
