"""Per-host concurrency windows: how many deliveries may run at once to one target host.

A fixed per-host bound has to choose between two harms: low, and a logout whose RPs share a
host (a SaaS serving many tenants' RPs) arrives in waves of the RP's answer time; high, and
a fragile host gets every POST of a large logout at once. A window per host avoids both, the
way TCP's congestion control does (RFC 5681 §3.1): a host not heard from recently starts at
``initial`` attempts at once; each delivered attempt widens its window by one (so it
doubles per round trip) up to ``ceiling``; a sign of overload from that host (no answer: a
timeout or a failed connection; or 429, 502, 503, 504, RFC 9110 §15.6.4 and RFC 6585 §4)
halves it, after which it grows by only one per window's worth of successes. Only attempts
started after the last cut can cut again, so one overloaded wave halves the window once,
not once per failed attempt. A host idle for ``idle_reset`` seconds starts over at
``initial`` (RFC 5681 §4.1 restarts an idle connection's window the same way).

An attempt that got no answer cuts the window only if no other attempt to that host was
delivered while it waited: one RP's endpoint that hangs while its host's other RPs answer is
that RP's fault, not the host's load (measured in ``bench.against_node``: the hung RP of one
case cut the window of the host of every RP, and the next case, 50 RPs, went out in two
waves). The window never drops below ``initial``: a sign of overload from one RP of a shared host
(one tenant's endpoint that hangs, while the others answer) must not throttle every RP of
that host below what a host never heard from gets. Measured: with a floor of one, the
5-second timeouts of one hanging RP among ten halved the window at every logout until ten
RPs took 143 ms instead of 26 ms. ``initial`` is thus also the bound for a host known to be
struggling; lower it (and the ceiling) for RP hosts known to be fragile.

Windows are per process (as the per-client bound is); ``ceiling`` stays a hard bound
(``delivery_max_concurrent_per_host``). Thread-safe; memory is bounded by ``max_hosts``
(least recently used hosts are forgotten, and start over at ``initial``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from ..backchannel.request import AttemptResult
from ..vocabulary import AttemptOutcome

__all__ = ["HostWindows", "is_overload"]

#: HTTP answers that say the host is overloaded or a gateway in front of it is (RFC 9110
#: §15.6.3-15.6.5, RFC 6585 §4 429 Too Many Requests). A 500 is an application error: it
#: neither widens nor narrows the window.
OVERLOAD_STATUSES = frozenset({429, 502, 503, 504})


def is_overload(result: AttemptResult) -> bool:
    """Whether an attempt's result is a sign that its host is overloaded: no HTTP answer at
    all (timeout, refused or reset connection) or an overload status. A refused address
    (policy) made no connection and says nothing about the host."""
    if result.outcome != AttemptOutcome.RETRY:
        return False
    if result.http_status is None:
        return True
    return result.http_status in OVERLOAD_STATUSES


@dataclass
class _Window:
    size: float
    threshold: float  # slow start below it, one per window above it (RFC 5681 §3.1 ssthresh)
    last_cut: float  # monotonic time of the last halving (-inf: never)
    last_used: float
    last_success: float = float("-inf")  # monotonic time of the last delivery


class HostWindows:
    """The concurrency window of each target host (see the module docstring)."""

    def __init__(
        self, initial: int, ceiling: int, *, idle_reset: float = 600.0, max_hosts: int = 4096
    ) -> None:
        self.ceiling = max(1, ceiling)
        self.initial = max(1, min(initial, self.ceiling))
        self.idle_reset = idle_reset
        self.max_hosts = max(1, max_hosts)
        self._lock = threading.Lock()
        self._hosts: OrderedDict[str, _Window] = OrderedDict()

    def _get(self, host: str, now: float) -> _Window:
        w = self._hosts.get(host)
        if w is None or now - w.last_used >= self.idle_reset:
            w = _Window(float(self.initial), float(self.ceiling), float("-inf"), now)
            self._hosts[host] = w
            while len(self._hosts) > self.max_hosts:
                self._hosts.popitem(last=False)
        else:
            self._hosts.move_to_end(host)
        return w

    def limit(self, host: str, now: float) -> int:
        """Attempts that may run to ``host`` at once now (at least 1, at most ``ceiling``)."""
        with self._lock:
            w = self._hosts.get(host)
            if w is None or now - w.last_used >= self.idle_reset:
                return self.initial
            return max(1, min(self.ceiling, int(w.size)))

    def started(self, host: str, now: float) -> None:
        """An attempt to ``host`` starts: the host is in use (its window is not idle)."""
        with self._lock:
            self._get(host, now).last_used = now

    def succeeded(self, host: str, now: float) -> None:
        """A delivery to ``host`` succeeded: widen its window."""
        with self._lock:
            w = self._get(host, now)
            w.last_used = now
            w.last_success = now
            if w.size < w.threshold:
                w.size = min(float(self.ceiling), w.size + 1.0)  # slow start
            else:
                w.size = min(float(self.ceiling), w.size + 1.0 / w.size)  # one per window

    def overloaded(self, host: str, started_at: float, now: float, *, answered: bool = True) -> bool:
        """An attempt to ``host`` started at ``started_at`` (monotonic) met overload: halve
        the window (not below ``initial``), unless a cut already followed that attempt's
        start. ``answered``: the host said so (429, 503...); otherwise the attempt got no
        answer (a timeout, a failed connection), which says nothing about the host if another
        attempt to it was delivered meanwhile: that endpoint hangs, the host answers. Returns
        whether it was cut."""
        with self._lock:
            w = self._get(host, now)
            w.last_used = now
            if started_at <= w.last_cut:
                return False  # the same wave: its cut is made
            if not answered and w.last_success > started_at:
                return False  # one endpoint of a host that delivers: not the host's load
            w.threshold = max(float(self.initial), w.size / 2)
            w.size = w.threshold
            w.last_cut = now
            return True
