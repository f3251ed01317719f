"""Perseus: an energy scheduler for pipeline-parallel large-model training.

The pure planning core lives in :mod:`perseus.profile`, :mod:`perseus.pipeline`,
:mod:`perseus.solver` and :mod:`perseus.plan`; it does no I/O beyond reading the
files it is handed and never imports torch or gRPC. The edges (device layer,
server, client, workers, CLI) are built around it.
"""

__version__ = "0.1.0"
