"""The local launcher: every server of the stack started and stopped by pid on loopback ports.

- ``services``: one ``Service``/``ManagedProcess`` (spawn, readiness, stop by pid and process
  group), the free-port finder, Redis, SeaweedFS (S3), HAProxy, gateways and job workers;
- ``server``: tritonserver (``TritonServer``) and ``make serve`` / ``make stop``;
- ``supervise``: restarts what dies (``make serve`` and ``make cluster`` run under it);
- ``cluster``: ``make cluster`` (Redis, S3, Tritons, gateways, workers behind HAProxy);
- ``demo``: ``make demo``.
"""
