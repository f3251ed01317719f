"""The closed loop's pure decisions: stragglers and drift from measured vs predicted stage times.

Nothing here does I/O; :mod:`perseus.server.control` feeds it the iteration reports and applies
what it decides.
"""
