"""edgecal's Python API: the use cases the CLI runs, as typed functions (see README: "Python
API").  ``edgecal`` re-exports the stable names."""
