"""The Perseus server: a gRPC control plane that profiles jobs, computes frontiers and serves plans.

:mod:`perseus.server.core` holds the job logic (synchronous, persisted through SQLAlchemy);
:mod:`perseus.server.service` adapts it to gRPC; :mod:`perseus.server.app` builds and runs the
server (health, reflection, auth, TLS, migrations).
"""
