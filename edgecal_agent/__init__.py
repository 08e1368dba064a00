"""edgecal device agent: runs ncnn on the board and returns statistics, never raw activations.

Depends only on the Python standard library, numpy and (lazily) ncnn, and runs on Python 3.9.
It never imports ``edgecal``; ``edgecal`` imports its wire format from it: the messages
(:mod:`edgecal_agent.messages`), ``.npz`` I/O (:mod:`edgecal_agent.npzio`) and the sample shards
(:mod:`edgecal_agent.shards`).
"""

__version__ = "0.4.1"

#: Major protocol version.  Host and agent refuse to talk across different majors; additions
#: within a major are optional fields (agent 0.2.0: the ``run`` op's ``timed``/``latency_s``;
#: 0.3.0: its ``compare``, answered by per-blob sums in ``layers_<k>.npz``; 0.4.0: its
#: ``variants``, several variants of the model fed from its unchanged blobs; 0.4.1: a job's
#: progress lines on stdout, in order with its DONE line, no longer on stderr).
PROTOCOL_VERSION = 1
