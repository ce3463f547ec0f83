"""Servers that come back on their own: a supervisor for the processes ``make serve`` and
``make cluster`` start (:class:`launch.services.Service` objects).

Every ``interval`` seconds each service is checked. One that was stopped by hand (``make stop``,
``launch.server.stop_gateway``: :meth:`Service.stop` removes its pid file) is left alone. One
that died (its pid file still there) is logged with how it ended
(exit code or signal), what is left of its process group is killed with SIGKILL (tritonserver's
Python-backend stubs live in its group and outlive a server killed alone), and it is started
again after a backoff: 1 s, doubled after each death that came less than ``stable_s`` after its
start, at most 30 s; a service that stayed up ``stable_s`` starts again at 1 s. A restart does
not wait for readiness (the gateway answers 503 ``triton_unavailable`` until its Triton is
ready again; HAProxy's health checks take a gateway back when it answers).

This is the one-machine and local-cluster counterpart of what ``deploy/`` gets from
Kubernetes (restart policy ``Always``, liveness probes) and compose (``restart: unless-stopped``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from launch.services import Service, kill_group

log = logging.getLogger("launch.supervise")


@dataclass
class _Watch:
    svc: Service
    started_at: float = field(default_factory=time.monotonic)
    backoff_s: float = 0.0
    restart_at: float | None = None  # set while dead, waiting for its backoff
    restarts: int = 0
    parked: bool = False  # stopped by hand: left alone


class Supervisor:
    """Restarts dead services with backoff (see the module's text).

    Args:
        services: the services to keep running (started already, or not: a service found dead
            is started after the first backoff).
        interval: seconds between checks.
        backoff_s, max_backoff_s: first and largest pause before a restart.
        stable_s: a service up this long counts as healthy again (backoff back to ``backoff_s``).
        on_restart: called with the service after each restart (e.g. to rewrite a topology file).
    """

    def __init__(self, services: Sequence[Service], interval: float = 0.5, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, stable_s: float = 60.0,
                 on_restart: Callable[[Service], None] | None = None) -> None:
        self.interval, self.base, self.max_backoff, self.stable_s = interval, backoff_s, max_backoff_s, stable_s
        self.on_restart = on_restart
        self._watches = [_Watch(svc) for svc in services]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def restarts(self) -> dict[str, int]:
        """Service name -> restarts so far."""
        return {w.svc.name: w.restarts for w in self._watches}

    def check(self) -> None:
        """One round: note deaths, restart those whose backoff has passed."""
        now = time.monotonic()
        with self._lock:
            watches = list(self._watches)
        for w in watches:
            if self._stop.is_set():
                return
            if w.parked:
                continue
            if not w.svc.alive() and not w.svc.pid_file.exists():
                # stopped by hand (Service.stop removes the pid file once the process is gone; a crash leaves it)
                w.parked, w.restart_at = True, None
                log.warning("%s was stopped by hand (its pid file is gone): not restarted", w.svc.name)
                continue
            if w.restart_at is None:
                if w.svc.alive():
                    continue
                pid = w.svc.pid or w.svc.last_pid
                how = w.svc.exit_status()
                _kill_leftovers(pid)
                up_for = now - w.started_at
                w.backoff_s = self.base if up_for >= self.stable_s or not w.backoff_s else \
                    min(w.backoff_s * 2, self.max_backoff)
                w.restart_at = now + w.backoff_s
                log.error("%s (pid %s) died after %.0f s (%s); restarting in %.0f s", w.svc.name, pid, up_for, how,
                          w.backoff_s)
            elif now >= w.restart_at:
                w.restarts += 1
                try:
                    pid = w.svc.spawn(append_log=True)
                except (RuntimeError, OSError) as exc:  # a port still held, a binary gone: try again later
                    w.backoff_s = min(max(w.backoff_s, self.base) * 2, self.max_backoff)
                    w.restart_at = now + w.backoff_s
                    log.error("%s could not be restarted (%s); next try in %.0f s", w.svc.name, exc, w.backoff_s)
                    continue
                w.started_at, w.restart_at = time.monotonic(), None
                log.warning("%s restarted (pid %d, restart %d); log %s", w.svc.name, pid, w.restarts,
                            w.svc.log_file)
                if self.on_restart is not None:
                    try:
                        self.on_restart(w.svc)
                    except Exception:  # a failed bookkeeping step must not stop the supervision
                        log.exception("after restarting %s", w.svc.name)

    def run(self) -> None:
        """Check every ``interval`` s until :meth:`stop`."""
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # never let one bad round end the supervision
                log.exception("supervision round failed")

    def run_until_signalled(self) -> None:
        """:meth:`run` in this (main) thread until SIGTERM or SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        self.run()

    def start(self) -> Supervisor:
        """Run in a daemon thread of this process."""
        self._thread = threading.Thread(target=self.run, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop checking (the services keep running); waits for a round in progress."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)


def interrupt_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt in the main thread: a supervisor process that
    is still starting its servers stops what it started (``Service.start`` cleans up) and exits.
    :meth:`Supervisor.run_until_signalled` replaces these handlers once all is up."""
    def interrupt(*_) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, interrupt)


def _kill_leftovers(pid: int | None) -> None:
    """SIGKILL what is left of the process group led by ``pid`` (Linux reuses no pid while a
    group of that id exists, so this reaches only that server's own children)."""
    if pid and kill_group(pid):
        log.info("killed what was left of process group %d", pid)
