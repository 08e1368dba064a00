"""edgecal device agent: runs ncnn on the board and returns statistics, never raw activations.

Depends only on the Python standard library, numpy and (lazily) ncnn, and runs on Python 3.9.
It never imports ``edgecal``; ``edgecal`` imports :mod:`device_agent.protocol` for the schema.
"""

__version__ = "0.1.0"

#: Major protocol version.  Host and agent refuse to talk across different majors.
PROTOCOL_VERSION = 1
