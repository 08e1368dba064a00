"""Pure ncnn file formats: ``.param`` text and ``.bin`` weight records."""

from edgecal.ncnnfmt.modelbin import LayerWeights, WeightRecord, read_modelbin, write_records
from edgecal.ncnnfmt.param import Layer, ParamFile, ParamValue, parse_param, render_param
from edgecal.ncnnfmt.topology import check_topology

__all__ = [
    "Layer",
    "LayerWeights",
    "ParamFile",
    "ParamValue",
    "WeightRecord",
    "check_topology",
    "parse_param",
    "read_modelbin",
    "render_param",
    "write_records",
]
