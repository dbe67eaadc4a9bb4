"""Stop signals that reach a worker process before its server has installed its own handlers.

A pre-fork server (gunicorn, granian) forks a worker and the worker installs its stop handlers
later: gunicorn in ``init_signals``, granian only after the app has loaded. A stop signal that
arrives in between runs the handler the worker inherited from the master (gunicorn's queues the
signal in the master's data structures; granian's sets the master's event), so the worker never
learns it was told to stop: it loads the app, joins the dispatcher election, and serves until the
master kills it after its graceful timeout.

:func:`guard_forks` closes that window: the stop signals are blocked in the forking thread across
``fork`` (a signal sent meanwhile stays pending), and the child, before unblocking them, installs
a handler that only notes the request (:data:`requested`). The server's own handlers replace it
once installed; the worker hooks read :data:`requested` to stop instead of starting work.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable
from typing import Any

#: A stop signal reached this process between its fork and its server's own handlers.
requested = threading.Event()

_guarded: set[signal.Signals] = set()
#: The forking thread's signal mask before the fork (per thread: two threads may fork at once).
_saved = threading.local()
_lock = threading.Lock()


def _note(_signum: int, _frame: Any) -> None:
    requested.set()


def _before_fork() -> None:
    _saved.mask = signal.pthread_sigmask(signal.SIG_BLOCK, _guarded)


def _after_fork_in_parent() -> None:
    mask = getattr(_saved, "mask", None)
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _saved.mask = None


def _after_fork_in_child() -> None:
    for sig in _guarded:
        signal.signal(sig, _note)
    _after_fork_in_parent()  # the mask the forking thread had before; pending signals arrive now


def guard_forks(signals: Iterable[signal.Signals]) -> None:
    """From now on, every ``fork`` of this process blocks ``signals`` across it and has the child
    note them (:data:`requested`) until something else handles them. Idempotent; the set of
    guarded signals only grows (``os.register_at_fork`` hooks cannot be removed)."""
    with _lock:
        first = not _guarded
        _guarded.update(signals)
        if first:
            os.register_at_fork(
                before=_before_fork,
                after_in_parent=_after_fork_in_parent,
                after_in_child=_after_fork_in_child,
            )


__all__ = ["guard_forks", "requested"]
