"""ncnn2int8 reimplemented: int8 conversion of an ncnn model from a calibration table."""

from edgecal.int8.convert import ConversionReport, quantize_model

__all__ = ["ConversionReport", "quantize_model"]
