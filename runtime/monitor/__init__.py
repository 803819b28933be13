"""What a person or a supervisor can see of a running flow: readiness (``/ready``, systemd's
watchdog), Prometheus metrics, the status page, and the HTTP listener that serves them.

Imported only by ``evflow run`` with ``--http`` or under systemd: the submodules that need h11 or
prometheus-client are imported by those that use them, never from here.
"""
