r"""The delivery dispatcher: claims due outbox rows and delivers them in parallel.

Embedded mode (the default): one :class:`Dispatcher` per OP process runs a background thread
that polls the outbox (every ``poll_interval`` seconds, immediately when :meth:`kick`-ed and
exactly when a scheduled retry falls due). Deliveries to different RPs run concurrently in a
bounded thread pool (``settings.delivery_concurrency``) that shares one address-policed
:class:`~oidc_logout.poster.Poster` (kept-alive connections per RP origin); every request has
connect and read timeouts, so a hanging RP occupies one pool slot for at most its timeout and
delays nobody else.

A logout's own fan-out does not wait for the polling thread (issue 15): the termination's
transaction claims its back-channel rows for this dispatcher (:meth:`claim_for_delivery`, a
durable lease committed with the rows), and right after the commit :meth:`adopt` starts them in
the *burst*: up to ``delivery_logout_burst`` attempt slots beyond ``delivery_concurrency``, so
the logout's parallelism grows with its RPs (within the per-client and per-host bounds below)
instead of queuing behind the steady-state slots. The logout response then :meth:`wait_for`\ s
with a bound ("wait a little, then let the background finish"). Completions are signalled
through a Condition, so waiting costs no database polling for rows this process delivers and
ends as soon as the last is recorded; rows delivered by another process are re-checked in
the database, soon at first, then at most every ``recheck_interval``.

Bounds against one target: at most ``delivery_max_concurrent_per_client`` attempts of one
client and a window's worth of attempts to one target host run at once in a process (the
window adapts to the host's answers, from ``delivery_initial_concurrent_per_host`` up to
``delivery_max_concurrent_per_host``: :mod:`.host_window`), and a client gets at most ``delivery_client_retry_budget`` retries per
``delivery_client_retry_window`` seconds (a token bucket: a failing RP is still probed every
window/budget seconds, and its first success makes its backlog due at once). A claim over a
bound waits in a short local queue
(as many as the bound allows to run; a logout's burst rows always wait here) or goes back to
the outbox, pending and due a little later
(:func:`.outbox.defer`, no attempt counted), so it neither holds a claim slot other clients
need nor gets lost. Back-Channel Logout §2.8 leaves retries to the OP; RFC 9110 §15.6.4's
advice to back off from an overloaded origin applies to every RP sharing a host.

Everything lives in the database: a retry scheduled before a restart is picked up by the next
dispatcher or worker, and a claim whose owner crashed comes back when its lease expires.

Throughput (docs/performance.md, "Delivery throughput"): results are written by *group
commit*: an attempt thread hands its result to :meth:`Dispatcher._record` and waits until it is
committed; whichever thread finds no write in progress writes every result queued so far in
one transaction (:func:`.outbox.record_results`), so under load many results share one
transaction and one pooled connection, and at light load a result is written at once. A thread
takes new work only after its result is committed, so at most ``delivery_concurrency`` (plus
``delivery_logout_burst`` while a logout's burst runs) attempts can have reached an RP without
being recorded (the bound on repeats after a crash).
Claims are refilled in batches: the polling thread is woken to claim again only when at least
half of ``delivery_concurrency`` claim slots are free, not after every completed attempt.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from functools import lru_cache
from urllib.parse import urlsplit

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from .. import metrics
from ..backchannel.request import RETRY, AttemptResult, attempt_delivery
from ..chunks import advance as advance_terminations
from ..config import Settings
from ..cutoffs import PRUNE_INTERVAL, prune_cutoffs
from ..keys import KeyRing
from ..logs import log_delivery
from ..poster import Poster
from ..ssf.push import attempt_push
from ..storage.base import utcnow
from ..storage.models import DEAD, DELIVERED, FINAL_STATES, PENDING
from ..vocabulary import AttemptOutcome, Channel
from . import outbox, policy
from .host_window import HostWindows, is_overload
from .outbox import LOST, ClaimedDelivery, SessionFactory

__all__ = ["Dispatcher", "default_owner"]

logger = logging.getLogger(__name__)

OnResult = Callable[[ClaimedDelivery, AttemptResult], None]

#: How many completed ids are remembered for :meth:`Dispatcher.wait_for` (older ones are
#: looked up in the database instead): a fixed budget, whatever the size of the fan-out.
_FINAL_MEMORY = 10_000

#: The outcome of a claim given back unattempted (a bound was reached; see the module doc).
DEFERRED = "deferred"

#: Requeued rows :meth:`Dispatcher.attempt_each` follows at a time.
_EACH_CHUNK = 1000

#: Lease renewals per ``delivery_lease_seconds`` (the heartbeat runs every lease / this): a
#: live owner keeps its rows unless this many renewals in a row fail or stall, while a dead
#: owner's rows are claimable at most one lease after its last renewal (docs/operations.md,
#: "Leases and at-least-once delivery").
RENEWALS_PER_LEASE = 4


@lru_cache(maxsize=4096)
def target_host(uri: str) -> str:
    """The host a delivery goes to, as the per-host bound counts it (cached: every start of a
    queued attempt looks at the host of every claim waiting, and the URIs are the RPs')."""
    try:
        host = urlsplit(uri).hostname or ""
    except ValueError:
        host = ""
    return host.rstrip(".").lower()


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _age_order(c: ClaimedDelivery) -> tuple[dt.datetime, int]:
    return (c.due_at or _EPOCH, c.id)


def _is_db_error(exc: BaseException) -> bool:
    """A database that cannot be reached or answered with an operational error (connection
    refused or dropped, database missing, server shutting down), as opposed to a bug."""
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or (
        isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)
    )


def _brief(exc: BaseException) -> str:
    """One line for a log: the exception type and the first line of its message (database
    drivers put the SQL and a background link on the following lines)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


class _PendingResult:
    """One attempt's result waiting for its group commit (see :meth:`Dispatcher._record`)."""

    __slots__ = ("batch", "claimed", "error", "finished", "outcome", "result", "wake")

    def __init__(self, claimed: ClaimedDelivery, result: AttemptResult) -> None:
        self.claimed = claimed
        self.result = result
        self.finished = False
        self.outcome: tuple[str, dt.datetime | None] = (LOST, None)
        self.error: BaseException | None = None
        #: Set for the thread asked to write the next batch: that batch.
        self.batch: list[_PendingResult] = []
        #: Held until the result is written or its thread is asked to write (a lock used as
        #: a one-shot signal: cheaper than an Event).
        self.wake = threading.Lock()
        self.wake.acquire()


def default_owner() -> str:
    """A lease owner name unique per process start: host, pid and a random suffix."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


#: Rows of logouts in their burst that a dispatcher may hold, as a multiple of
#: ``delivery_logout_burst`` (see ``Dispatcher._burst_room``): 512 by default, so a session's
#: whole fan-out stays in the process that answered its logout.
BURST_HOLD_FACTOR = 4


class Dispatcher:
    """In-process delivery of back-channel logout notifications (see module docstring)."""

    def __init__(
        self,
        session_factory: SessionFactory,
        keyring: KeyRing,
        settings: Settings,
        owner: str | None = None,
        *,
        on_result: OnResult | None = None,
        poster: Poster | None = None,
        poll_interval: float = 0.5,
        recheck_interval: float = 0.5,
        db_unreachable_exit_after: float | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.keyring = keyring
        self.settings = settings
        self.owner = (owner or default_owner())[:64]
        self.on_result = on_result
        self.poll_interval = poll_interval
        self.recheck_interval = recheck_interval
        #: Stop (``gave_up``) after the database was unreachable this long (None: never; the
        #: standalone worker sets it, an embedded dispatcher keeps trying with its OP).
        self.db_unreachable_exit_after = db_unreachable_exit_after
        self.gave_up = False
        self._own_poster = poster is None
        self._concurrency = max(1, settings.delivery_concurrency)
        #: Extra attempt slots for a logout's own rows (see claim_for_delivery).
        self._burst_max = max(0, settings.delivery_logout_burst)
        # Connections kept per host: as many as may run to one host at once (a burst to a
        # host serving many RPs would otherwise open and discard the extra ones).
        per_host = max(
            settings.delivery_concurrency,
            min(max(1, settings.delivery_max_concurrent_per_host), self._concurrency + self._burst_max),
        )
        #: Back-channel logouts and Shared Signals pushes: kept-alive HTTP/1.1 under the
        #: address policy.
        self.poster = poster or Poster(
            dev_mode=settings.dev_mode,
            allowlist=tuple(settings.address_allowlist),
            max_idle_per_origin=per_host,
        )
        #: Claims held at once (running + queued); more would only hold leases idle.
        self._capacity = self._concurrency * 2
        #: A saturated dispatcher claims again once this many claim slots are free (a batch
        #: per claim transaction instead of one claim per completed attempt).
        self._refill_at = max(1, self._concurrency // 2)
        # Group commit of results (see _record).
        #: Seconds a result waits for its group commit before checking it was not orphaned.
        self.handoff_patience = 5.0
        self._rec_lock = threading.Lock()
        self._rec_queue: list[_PendingResult] = []
        self._rec_busy = False
        # Threads are started on demand: the burst's only exist once a logout needed them.
        self._executor = ThreadPoolExecutor(
            max_workers=self._concurrency + self._burst_max, thread_name_prefix="oidc-logout-delivery"
        )
        self._cond = threading.Condition()
        self._final: OrderedDict[int, str] = OrderedDict()
        self._inflight: dict[int, tuple[ClaimedDelivery, Future[str]]] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_due: float | None = None  # monotonic time of the earliest local retry
        self._saturated = False
        self._closed = False
        #: Outcome counters (delivered / retry / failed / dead / lost / error / deferred).
        self.stats: Counter[str] = Counter()
        # Per-client / per-host bounds (guarded by _cond): attempts running, claims waiting
        # for a slot (in claim order), and the start times of each client's recent retries.
        self._per_client = max(1, settings.delivery_max_concurrent_per_client)
        #: Claims of one client kept waiting here for its slots (see _pump), and all it may
        #: hold here, running or waiting (the room a refill claim is sized to, _client_room).
        self._client_waiting = 2 * self._per_client
        self._client_hold = self._per_client + self._client_waiting
        #: The per-host bound: a window per host that adapts to its answers (host_window).
        self.host_windows = HostWindows(
            settings.delivery_initial_concurrent_per_host, settings.delivery_max_concurrent_per_host
        )
        self._running_total = 0
        #: Claims of a logout's burst (held: queued or running) and those running now; the
        #: burst slots are counted apart from the steady-state ones (guarded by _cond).
        self._burst_ids: set[int] = set()
        self._burst_running: set[int] = set()
        self._running_client: Counter[str] = Counter()
        self._running_host: Counter[str] = Counter()
        self._parked: deque[ClaimedDelivery] = deque()
        #: Clients whose retry just succeeded: the claim loop makes their waiting rows due.
        self._recovered: set[str] = set()
        #: Per-client retry token buckets: client_id -> (tokens, last refill, monotonic).
        self._retries: dict[str, tuple[float, float]] = {}
        #: How long a claim over a bound waits in the outbox before it is claimed again.
        self.defer_delay = max(0.05, poll_interval)
        #: Chunked terminations (:func:`..chunks.advance`): looked for at the first cycle after
        #: a :meth:`kick` (a termination committed here, or NOTIFY from another process), and
        #: otherwise at most once per poll interval while none is running (monotonic time).
        self._chunks_kicked = True
        self._chunks_next = 0.0
        #: Why the claim loop woke: only finished attempts (``_refill_wake``), whose claim is
        #: sized to the room its clients have here, or anything else (start, kick, a retry
        #: due, the poll interval: ``_full_claim``), whose claim takes what capacity allows.
        self._refill_wake = False
        self._full_claim = True
        # Lease heartbeat (see _renew): the current lease_until (= fencing token) of every row
        # held, i.e. claimed and not yet recorded or given back. _fence_lock serializes the
        # renewal UPDATE with every fenced write (results, deferrals, releases), so a write
        # always carries the lease the database holds. _lease_lock guards the dict only, for
        # moments: an attempt that starts (_lease_lost) or a burst adopted (_submit) does not
        # wait for a group commit's transaction.
        self._fence_lock = threading.Lock()
        self._lease_lock = threading.Lock()
        self._leases: dict[int, dt.datetime] = {}
        #: The claim each lease in ``_leases`` belongs to: a row given back (or recorded) can be
        #: claimed again before the first claim's bookkeeping is cleared, and clearing it must
        #: not drop the newer claim (its lease would be renewed with no attempt behind it).
        self._lease_claim: dict[int, ClaimedDelivery] = {}
        self.renew_interval = max(0.05, settings.delivery_lease_seconds / RENEWALS_PER_LEASE)
        self._heartbeat: threading.Thread | None = None
        self._heartbeat_stop = threading.Event()
        # Housekeeping (see _housekeeping): pruning of cut-offs nothing depends on any more.
        self.housekeeping_interval = PRUNE_INTERVAL
        self._last_housekeeping: float | None = None  # monotonic; None: the first cycle runs it
        self._prune_after = 0
        #: Most rows this dispatcher held at once (claimed, not yet recorded): the memory
        #: bound of the fan-out, whatever its size (at most 2 x delivery_concurrency, plus
        #: the rows of logouts in their burst, at most BURST_HOLD_FACTOR x delivery_logout_burst).
        self.max_held = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the background polling thread (idempotent). A stopped dispatcher cannot be
        restarted: make a new one."""
        if self._closed:
            raise RuntimeError("dispatcher was stopped; create a new one")
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self.run_forever, name="oidc-logout-dispatcher", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Wake the polling thread now (e.g. right after a termination committed)."""
        with self._cond:  # not lost between _cycle's read and reset of the flags
            self._chunks_kicked = True
            self._full_claim = True
        self._wake.set()

    def request_stop(self) -> None:
        """Stop claiming new work (signal-handler safe: only sets events)."""
        self._stopping.set()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop claiming, let running attempts finish (up to ``timeout``), give back claims
        that never started. Returns True if everything in flight finished in time."""
        deadline = time.monotonic() + timeout
        self.request_stop()
        self._closed = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        done = self.drain(max(0.0, deadline - time.monotonic()))
        # Only now: attempts still running during the drain kept their leases renewed.
        self._heartbeat_stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(max(0.0, deadline - time.monotonic()) + 1.0)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._own_poster:
            self.poster.close()
        return done

    def drain(self, timeout: float) -> bool:
        """Wait for running attempts; release (back to pending) claims not yet started."""
        with self._cond:
            items = list(self._inflight.values())
        not_started = [c for c, fut in items if fut.cancel()]
        if not_started:
            try:
                n = self._give_back(not_started, None)
                logger.info("%s released %d unstarted claims", self.owner, n)
            except Exception as exc:  # the leases will expire instead
                logger.warning("releasing unstarted claims failed (%s); their leases expire", _brief(exc))
            with self._cond:
                for c in not_started:
                    self._forget(c)
        running = [fut for _c, fut in items if not fut.cancelled()]
        _done, not_done = futures_wait(running, timeout=timeout)
        return not not_done

    # -- the loop ------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Poll-claim-dispatch until :meth:`request_stop` (the thread body; the worker runs
        it in the foreground).

        A database that cannot be reached is retried with a capped exponential backoff (0.5 s
        doubling to 30 s) and ONE warning line per step, never a traceback; with
        ``db_unreachable_exit_after`` set, the loop gives up (``gave_up``) once the database
        has been unreachable that long, so a supervisor sees a failed process instead of one
        that logs forever. Any other exception (a bug) is logged with its traceback, under the
        same backoff."""
        logger.info("delivery dispatcher %s started", self.owner)
        self._ensure_heartbeat()
        down_since: float | None = None
        backoff = 0.0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                claimed = self._cycle()
            except Exception as exc:
                now = time.monotonic()
                if down_since is None:
                    down_since, backoff = now, 0.5
                else:
                    backoff = min(backoff * 2, 30.0)
                down = now - down_since
                limit = self.db_unreachable_exit_after
                db_down = _is_db_error(exc)
                if db_down and limit is not None and limit > 0 and down >= limit:
                    logger.error(
                        "delivery dispatcher %s: database unreachable for %.1f s (%s); giving up "
                        "(worker_db_unreachable_exit_after=%g)",
                        self.owner,
                        down,
                        _brief(exc),
                        limit,
                    )
                    self.gave_up = True
                    break
                if limit is not None and limit > 0:
                    backoff = min(backoff, max(0.05, limit - down))  # do not oversleep the limit
                if db_down:
                    logger.warning(
                        "database unreachable (%s); retrying in %.1f s (unreachable for %.1f s%s)",
                        _brief(exc),
                        backoff,
                        down,
                        f", giving up after {limit:g} s" if limit else "",
                    )
                else:
                    logger.exception("claiming due deliveries failed; retrying in %.1f s", backoff)
                self._stopping.wait(backoff)
                continue
            if down_since is not None:
                logger.info(
                    "delivery dispatcher %s: database reachable again after %.1f s",
                    self.owner,
                    time.monotonic() - down_since,
                )
                down_since = None
            if claimed and not self._saturated:
                continue  # there may be more due rows right now
            if not self._wake.wait(self._sleep_time()):
                self._full_claim = True  # the poll interval: look at everything due
        logger.info("delivery dispatcher %s stopped claiming", self.owner)

    def _sleep_time(self) -> float:
        now = time.monotonic()
        delay = self.poll_interval
        with self._cond:
            if self._next_due is not None:
                delay = min(delay, max(0.0, self._next_due - now))
        return delay

    def _cycle(self) -> int:
        self._advance_terminations()
        self._housekeeping()
        self._resume_recovered()
        with self._cond:
            free = self._capacity - self._held_steady()
            if self._next_due is not None and self._next_due <= time.monotonic():
                self._next_due = None
                self._full_claim = True  # a retry (or a deferred row) is due
            full = self._full_claim or not self._refill_wake
            self._full_claim = self._refill_wake = False
            # None: claim what capacity allows. Nothing held at a refill (its last attempts
            # ended meanwhile): what one client can take, not a whole batch of its rows.
            room = None
            if not full:
                held = self._client_room()
                room = self._client_hold if held is None else held
        self._saturated = free <= 0
        if free <= 0:
            return 0
        limit = min(self.settings.delivery_batch_size, free)
        if room is not None:
            # Woken by finished attempts only: claim what their clients can run or keep
            # waiting here. A claim sized to the free capacity gave most of itself back at
            # once when one client's bound was the limit (a kill switch of one client: 2,764
            # releases for 2,000 rows); another client's rows still come with the next
            # kick, due retry or poll interval, and are kept (their room is whole).
            limit = min(limit, max(1, room))
        claims = outbox.claim_due(
            self.session_factory, self.owner, limit, self.settings.delivery_lease_seconds
        )
        futures = self._submit(claims)
        self._saturated = len(claims) >= free or (room is not None and len(claims) >= limit)
        # Claims given back at once (every bound they need is full) are not progress: the
        # loop then waits for a finished attempt or defer_delay instead of claiming again.
        return sum(1 for f in futures if not (f.done() and f.result() == DEFERRED))

    def _advance_terminations(self) -> None:
        """Run chunks of chunked terminations (their outbox rows). A cycle follows every batch
        of finished attempts, so looking on each one cost a transaction per cycle for nothing
        (a tenth of a bulk delivery's GIL time on SQLite): when none was running, the next
        look waits for a kick or the poll interval, the latency at which this loop sees
        another process's rows anyway."""
        now = time.monotonic()
        if not self._chunks_kicked and now < self._chunks_next:
            return
        self._chunks_kicked = False  # before the look: a kick meanwhile makes the next cycle look
        ran = advance_terminations(self.session_factory, self.settings)
        self._chunks_next = now if ran else now + self.poll_interval

    def _housekeeping(self) -> None:
        """Every ``housekeeping_interval`` seconds: delete a bounded batch of termination
        cut-offs that nothing depends on any more (:func:`oidc_logout.cutoffs.prune_cutoffs`;
        safe on any number of concurrent loops). A failure is logged and retried next time;
        it never stops the delivery loop."""
        now = time.monotonic()
        if self._last_housekeeping is not None and now - self._last_housekeeping < self.housekeeping_interval:
            return
        self._last_housekeeping = now
        try:
            self._prune_after = prune_cutoffs(
                self.session_factory, self.settings, after_id=self._prune_after
            ).next_after
        except Exception as exc:
            # An unreachable database is the claim loop's to report (one line per backoff step).
            log = logger.debug if _is_db_error(exc) else logger.warning
            log("pruning termination cut-offs failed (%s); retrying later", _brief(exc))

    # -- delivering ----------------------------------------------------------------------

    def deliver_now(self, ids: Iterable[int], *, burst: bool = False) -> list[int]:
        """Claim the given rows (those still due) and start delivering them in parallel;
        returns the ids claimed here. Does not wait: use :meth:`wait_for`.

        ``burst``: the rows of one logout that a caller has just committed
        (:meth:`.Provider.dispatch`): claimed only as far as the burst has room, and run in
        the burst's slots (:meth:`claim_for_delivery`); the others are left to the claim loop,
        which is woken."""
        id_list = list(ids)
        if not id_list or self._closed:
            return []
        rest = 0
        if burst:
            room = self._burst_room()
            rest = max(0, len(id_list) - room)
            id_list = sorted(id_list)[:room]
        claims = (
            outbox.claim_due(
                self.session_factory,
                self.owner,
                len(id_list),
                self.settings.delivery_lease_seconds,
                ids=id_list,
            )
            if id_list
            else []
        )
        if burst:
            self.adopt(claims)
            if rest:
                self.kick()  # the claim loop takes the rows the burst had no room for
        else:
            self._submit(claims)
        return [c.id for c in claims]

    # -- a logout's own fan-out (the burst) -------------------------------------------------

    def claim_for_delivery(self, db: Session, ids: Sequence[int]) -> list[ClaimedDelivery]:
        """Claim, in the caller's open transaction ``db`` (a termination that has just
        written these outbox rows), as many of ``ids`` as the burst has room for; hand the
        result to :meth:`adopt` **after** the commit (a rollback takes the claims back with
        the rows: nothing was registered here).

        This is how one logout reaches its RPs fast (issue 15): no second write transaction
        to claim the rows, no wake-up of the polling thread, and attempt slots beyond the
        steady-state ``delivery_concurrency`` (``delivery_logout_burst`` more), so the
        logout's parallelism grows with its RPs, still within the per-client and per-host
        bounds. The claim is the ordinary durable lease (:func:`.outbox.claim_rows`): if this
        process dies after the commit, the rows come back when the lease expires. Rows left
        out (no room) stay pending for the claim loop (:meth:`kick`)."""
        if self._closed or self._burst_max <= 0 or not ids:
            return []
        room = self._burst_room()
        if room <= 0:
            return []
        return outbox.claim_rows(db, self.owner, sorted(ids)[:room], self.settings.delivery_lease_seconds)

    def adopt(self, claims: list[ClaimedDelivery]) -> None:
        """Start delivering claims made by :meth:`claim_for_delivery` once their transaction
        committed: at once, in the burst's slots. A stopped dispatcher gives them back to
        pending instead (no lease to wait out)."""
        if not claims:
            return
        if self._closed:
            try:
                self._give_back(claims, None)
            except Exception as exc:  # their leases expire instead
                logger.warning(
                    "giving back %d claims failed (%s); their leases expire", len(claims), _brief(exc)
                )
            return
        self._submit(claims, burst=True)

    def _burst_room(self) -> int:
        """Burst claims this dispatcher can take now (a logout in each of several request
        threads may each see the same room: the running attempts stay bounded by the burst's
        slots, only the queue of one of them grows by what it claimed).

        The burst holds up to :data:`BURST_HOLD_FACTOR` times its slots: the attempts running
        stay bounded by the slots, the rest wait in the process. Rows left out go to a claim
        loop, which takes them in batches into the steady-state slots, or, in a worker of a
        multi-process server that is not elected (no claim loop here,
        ``Provider.start_logout_delivery``), in another process at its next poll: measured for
        one session with 200 RPs, holding them all ended its fan-out sooner either way
        (docs/performance.md, "Production server")."""
        hold = self._burst_max * BURST_HOLD_FACTOR
        with self._cond:
            return max(0, hold - self._held_burst())

    def _held_burst(self) -> int:
        """Burst claims held (queued or running); forgets finished ones (holds _cond)."""
        if self._burst_ids:
            self._burst_ids &= self._inflight.keys()
        return len(self._burst_ids)

    def _client_room(self) -> int | None:
        """Rows the clients this dispatcher holds rows of could still take here, running or
        waiting for their slot (holds _cond): per client, its bound running plus twice its
        bound waiting (see :meth:`_pump`). None when it holds none: no client limits a claim."""
        waiting = Counter(c.client_id for c in self._parked)
        if not waiting and not self._running_client:
            return None
        return sum(
            max(0, self._client_hold - self._running_client[cid] - waiting[cid])
            for cid in waiting.keys() | self._running_client.keys()
        )

    def _held_steady(self) -> int:
        """Claims held outside the burst: what ``2 x delivery_concurrency`` bounds (holds _cond)."""
        return len(self._inflight) - self._held_burst()

    def run_once(self, timeout: float | None = None, *, ids: Sequence[int] | None = None) -> dict[str, int]:
        """Claim everything due now (only among ``ids`` if given), deliver it, record it;
        return outcome counts (``delivered``, ``retry``, ``failed``, ``dead``, ``lost``). For
        tests and the CLI.

        Streams: claims are taken in batches of at most ``delivery_batch_size`` and only while
        fewer than ``2 x delivery_concurrency`` rows are held, so memory does not grow with the
        number of due rows. Only rows due when a round starts are claimed in it (a retry
        scheduled meanwhile is not attempted twice). Claims given back because a per-client or
        per-host bound was reached are claimed again when due (within ``timeout``), so every
        row due at the start gets its attempt."""
        deadline = None if timeout is None else time.monotonic() + timeout
        counts: Counter[str] = Counter()
        batch = max(1, self.settings.delivery_batch_size)
        for _round in range(10_000):  # bounded; each round makes progress or ends
            due_by = utcnow()
            pending: set[Future[str]] = set()
            more, deferred, timed_out = True, 0, False
            while more or pending:
                with self._cond:
                    free = self._capacity - len(self._inflight)
                if more and free > 0 and not self._closed:
                    n = min(batch, free)
                    claims = outbox.claim_due(
                        self.session_factory,
                        self.owner,
                        n,
                        self.settings.delivery_lease_seconds,
                        ids,
                        due_by=due_by,
                    )
                    new = self._submit(claims)
                    more = len(claims) >= n
                    given_back = 0
                    for fut in new:
                        if fut.done() and fut.result() == DEFERRED:
                            given_back += 1  # a bound is full: due again as it was
                        else:
                            pending.add(fut)
                    deferred += given_back
                    if not new or given_back < len(new):
                        continue
                    # Nothing could start: wait for a running attempt (below) before claiming.
                more = more and not self._closed
                if not pending:
                    if not more:
                        break
                    # Every slot is held by rows this call did not submit (deliver_now or the
                    # background loop), or every bound they need is: wait a little.
                    with self._cond:
                        self._cond.wait(self.defer_delay)
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    timed_out = True
                    break
                done, pending = futures_wait(pending, timeout=remaining, return_when=FIRST_COMPLETED)
                for fut in done:
                    state = fut.result() if not fut.cancelled() else "unfinished"
                    if state == DEFERRED:
                        deferred += 1
                    else:
                        counts["retry" if state == PENDING else state] += 1
            if timed_out:
                counts["unfinished"] += len(pending)
                counts["deferred"] += deferred
                break
            if not deferred:
                break
            if deadline is not None and time.monotonic() + self.defer_delay > deadline:
                counts["deferred"] += deferred
                break
            time.sleep(self.defer_delay)  # the deferred rows fall due again
        return dict(counts)

    def attempt_each(self, attempts_before: dict[int, int], stall_timeout: float) -> dict[str, int]:
        """Give every one of these requeued rows its next attempt, made here or by whoever
        holds the row; returns this process's outcome counts (as :meth:`run_once`), plus
        ``unfinished`` for rows that had no attempt at the end. ``attempts_before``: each
        row's ``attempts`` when it was requeued.

        For ``oidc-logout retry --now`` beside a running service: the service's dispatcher
        may claim a requeued row before this one does (or give it back, a bound being
        full). Rows this process can claim are delivered here; a row another dispatcher
        holds is waited for until its attempt is recorded (or its lease expires and it is
        claimed here). Only these rows are claimed, never other due work. Gives up when no row
        has made progress for ``stall_timeout`` seconds. Works in chunks of :data:`_EACH_CHUNK`
        ids, so memory stays flat however many rows were requeued."""
        counts: Counter[str] = Counter()
        todo = sorted(attempts_before)
        for start in range(0, len(todo), _EACH_CHUNK):
            waiting = {i: attempts_before[i] for i in todo[start : start + _EACH_CHUNK]}
            last_progress = time.monotonic()
            pause = 0.02
            while waiting:
                counts.update(self.run_once(ids=sorted(waiting)))
                with self.session_factory() as db:
                    marks = outbox.progress(db, waiting)
                before = len(waiting)
                for i in list(waiting):
                    mark = marks.get(i)
                    # Done: gone, final, or attempted since it was requeued (by anyone).
                    if mark is None or mark[0] in FINAL_STATES or mark[1] > waiting[i]:
                        del waiting[i]
                if len(waiting) < before:
                    last_progress, pause = time.monotonic(), 0.02
                elif time.monotonic() - last_progress >= stall_timeout:
                    counts["unfinished"] += len(waiting) + max(0, len(todo) - start - _EACH_CHUNK)
                    return dict(counts)
                if waiting:  # held by another dispatcher: look again shortly
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
        return dict(counts)

    def _submit(self, claims: list[ClaimedDelivery], *, burst: bool = False) -> list[Future[str]]:
        """Queue claims for their attempts (started at once where the bounds allow);
        ``burst``: a logout's own rows, run in the burst's slots (:meth:`adopt`)."""
        futures: list[Future[str]] = []
        if not claims:
            return futures
        with self._lease_lock:
            for c in claims:
                if c.lease_until is not None:
                    self._leases[c.id] = c.lease_until
                    self._lease_claim[c.id] = c
            self.max_held = max(self.max_held, len(self._leases))
        self._ensure_heartbeat()
        with self._cond:
            for c in claims:
                fut: Future[str] = Future()
                self._inflight[c.id] = (c, fut)
                futures.append(fut)
            if burst:
                self._burst_ids.update(c.id for c in claims)
            # Oldest due first: when a bound makes some claims wait or go back to the outbox,
            # it is the younger ones (a crashed worker's re-claimed rows, due since the
            # termination, are not sent to the back of the fan-out). At most 2 x concurrency.
            self._parked = deque(sorted([*self._parked, *claims], key=_age_order))
        self._pump()
        return futures

    def _retry_budget_left(self, client_id: str, now: float) -> float | None:
        """None if ``client_id`` may retry now, else seconds until it may (holds _cond).

        A token bucket: ``delivery_client_retry_budget`` retries at once at most, refilled at
        budget/window per second. A failing RP is not hammered however many rows it has, yet
        is still probed every window/budget seconds, so its recovery is seen promptly."""
        budget = self.settings.delivery_client_retry_budget
        if budget <= 0:
            return None
        tokens = self._bucket(client_id, now, budget)
        if tokens >= 1:
            return None
        rate = budget / max(self.settings.delivery_client_retry_window, 1e-3)
        return max(self.defer_delay, (1 - tokens) / rate)

    def _bucket(self, client_id: str, now: float, budget: int) -> float:
        entry = self._retries.get(client_id)
        if entry is None:
            return float(budget)
        tokens, at = entry
        rate = budget / max(self.settings.delivery_client_retry_window, 1e-3)
        tokens = min(float(budget), tokens + (now - at) * rate)
        if tokens >= budget:
            del self._retries[client_id]  # full again: forget the client
        else:
            self._retries[client_id] = (tokens, now)
        return tokens

    def _spend_retry(self, client_id: str, now: float) -> None:
        budget = self.settings.delivery_client_retry_budget
        if budget > 0:
            self._retries[client_id] = (self._bucket(client_id, now, budget) - 1, now)

    def _pump(self) -> None:
        """Start every queued claim the per-client and per-host bounds allow; keep up to twice
        a client's bound (and a host's bound) waiting; give the rest back to the outbox.

        Twice, not once: a claimed batch spread over a few clients then fits (with one bound's
        worth waiting, a bulk termination's 3 RPs gave 1,200 of their 3,000 rows back, each a
        release and a claim again), while one slow client still holds at most 3 bounds of the
        claim capacity and cannot keep the other clients' rows from being claimed."""
        start: list[tuple[ClaimedDelivery, Future[str]]] = []
        defer: dict[float | None, list[tuple[ClaimedDelivery, Future[str]]]] = {}
        now = time.monotonic()
        with self._cond:
            keep: deque[ClaimedDelivery] = deque()
            waiting_client: Counter[str] = Counter()
            waiting_host: Counter[str] = Counter()
            host_limit: dict[str, int] = {}
            for c in self._parked:
                entry = self._inflight.get(c.id)
                if entry is None or entry[1].cancelled():
                    continue  # given back by drain()
                burst = c.id in self._burst_ids
                host = target_host(c.target_uri)
                per_host = host_limit.get(host)
                if per_host is None:
                    per_host = host_limit[host] = self.host_windows.limit(host, now)
                wait_budget = self._retry_budget_left(c.client_id, now) if c.attempts else None
                if wait_budget is not None:
                    # A client's retries are bounded: a failing RP is not hammered, whatever
                    # number of rows (sessions) it has. The row waits; nothing is dropped.
                    defer.setdefault(round(wait_budget, 3), []).append((c, entry[1]))
                elif (
                    self._running_client[c.client_id] < self._per_client
                    and self._running_host[host] < per_host
                ):
                    if burst:
                        if len(self._burst_running) >= self._burst_max:
                            keep.append(c)  # the burst's slots are full: next free one
                            continue
                        self._burst_running.add(c.id)
                    elif self._running_total - len(self._burst_running) >= self._concurrency:
                        keep.append(c)  # only the pool is full: next free thread takes it
                        continue
                    self._running_total += 1
                    self._running_client[c.client_id] += 1
                    self._running_host[host] += 1
                    self.host_windows.started(host, now)
                    if c.attempts:
                        self._spend_retry(c.client_id, now)
                    start.append((c, entry[1]))
                elif burst:
                    # A logout's own rows wait here for their client's or host's slot instead
                    # of going back to the outbox: as few as the burst holds, and the waiting
                    # logout sees them finish without asking the database.
                    keep.append(c)
                elif waiting_client[c.client_id] < self._client_waiting and waiting_host[host] < per_host:
                    waiting_client[c.client_id] += 1
                    waiting_host[host] += 1
                    keep.append(c)
                else:
                    defer.setdefault(None, []).append((c, entry[1]))  # over a bound: not by us, not now
            self._parked = keep
        for delay, pairs in defer.items():
            self._defer(pairs, delay)
        for c, fut in start:
            if not fut.set_running_or_notify_cancel():  # drain() gave it back meanwhile
                self._release_slots(c)
                continue
            try:
                self._executor.submit(self._run, c, fut)
            except RuntimeError:  # shut down meanwhile: give it back
                self._release_slots(c)
                try:
                    self._give_back([c], None)
                finally:
                    with self._cond:
                        self._forget(c)
                    fut.set_result(DEFERRED)

    def _defer(self, pairs: list[tuple[ClaimedDelivery, Future[str]]], delay: float | None) -> None:
        """Give claims back unattempted: due ``delay`` seconds from now (a client out of
        retry budget), or (``None``: a per-client/per-host bound is full) due as they were.

        A row over a bound keeps its ``next_attempt_at``, hence its place in the fan-out:
        another worker may take it at once, and this one takes it again when a slot frees. (It
        used to be due ``defer_delay`` later, which sent it behind every other row of a large
        fan-out: a crashed worker's re-claimed rows came last instead of first.) This
        dispatcher does not claim again for ``defer_delay`` unless an attempt finishes, so a
        full bound does not make it spin on claims."""
        claims = [c for c, _ in pairs]
        until = None if delay is None else utcnow() + dt.timedelta(seconds=delay)
        try:
            self._give_back(claims, until)
        except Exception as exc:  # the leases expire instead; the rows are not lost
            logger.warning("deferring %d claims failed (%s); their leases expire", len(claims), _brief(exc))
        logger.debug(
            "%s deferred %d claims (%s)",
            self.owner,
            len(claims),
            "per-client/per-host bounds" if delay is None else f"retry budget, {delay:.2f} s",
        )
        with self._cond:
            for c, fut in pairs:
                # Only this claim's entry: the claim loop may hold the row anew already (given
                # back above, then due at once: a recovered client's resumed backlog).
                self._forget(c)
                if not fut.done():
                    fut.set_result(DEFERRED)
            self.stats[DEFERRED] += len(claims)
            self._cond.notify_all()
            if until is None:  # look again a little later (or when an attempt finishes)
                when = time.monotonic() + self.defer_delay
                if self._next_due is None or when < self._next_due:
                    self._next_due = when
        if until is not None:
            self._schedule_wake(until)

    # -- leases ----------------------------------------------------------------------------

    def _fresh(self, c: ClaimedDelivery) -> ClaimedDelivery:
        """``c`` with the lease the database holds for it now (holds _lease_lock): the
        heartbeat moves ``lease_until``, the fencing token of every write."""
        lease = self._leases.get(c.id)
        if lease is None or lease == c.lease_until:
            return c
        return dataclasses.replace(c, lease_until=lease)

    def _forget(self, c: ClaimedDelivery) -> None:
        """Drop ``c`` from the claims held here, unless its row is held by a newer claim
        (holds _cond)."""
        entry = self._inflight.get(c.id)
        if entry is not None and entry[0] is c:
            del self._inflight[c.id]

    def _drop_lease(self, c: ClaimedDelivery) -> None:
        """Stop renewing ``c``'s lease, unless its row was claimed again meanwhile (holds
        _lease_lock): recorded or given back, a row can be claimed anew before this runs, and
        dropping the newer claim's lease would let it expire under a running attempt."""
        if self._lease_claim.get(c.id, c) is c:
            self._leases.pop(c.id, None)
            self._lease_claim.pop(c.id, None)

    def _give_back(self, claims: list[ClaimedDelivery], until: dt.datetime | None) -> int:
        """Claims back to pending (:func:`.outbox.release` / :func:`.outbox.defer`), fenced
        with their current lease; they are no longer held."""
        with self._fence_lock:
            with self._lease_lock:
                fresh = [self._fresh(c) for c in claims]
            try:
                if until is None:
                    return outbox.release(self.session_factory, fresh, self.owner)
                return outbox.defer(self.session_factory, fresh, self.owner, until)
            finally:
                with self._lease_lock:
                    for c in claims:
                        self._drop_lease(c)

    def _ensure_heartbeat(self) -> None:
        with self._lease_lock:
            if self._heartbeat is not None or self._heartbeat_stop.is_set():
                return
            self._heartbeat = threading.Thread(
                target=self._heartbeat_loop, name="oidc-logout-lease-heartbeat", daemon=True
            )
        self._heartbeat.start()

    def _heartbeat_loop(self) -> None:
        while not self._heartbeat_stop.wait(self.renew_interval):
            self.renew_leases()

    def renew_leases(self) -> int:
        """The lease heartbeat (every ``delivery_lease_seconds / 4`` while rows are held):
        ONE ``UPDATE`` extends the lease of every row this dispatcher holds and still owns
        (:func:`.outbox.renew_leases`). So a short lease costs nothing to a live worker,
        however long its attempts or queues take, while the rows of a worker that died are
        claimable again at most ``delivery_lease_seconds`` after its last renewal. Returns
        the number of rows renewed."""
        with self._fence_lock:
            with self._lease_lock:
                ids = list(self._leases)
            if not ids:
                return 0
            try:
                renewed, until = outbox.renew_leases(
                    self.session_factory, self.owner, ids, self.settings.delivery_lease_seconds
                )
            except Exception as exc:
                logger.warning(
                    "%s: renewing the leases of %d deliveries failed (%s); retrying in %.1f s",
                    self.owner,
                    len(ids),
                    _brief(exc),
                    self.renew_interval,
                )
                return 0
            with self._lease_lock:
                for i in ids:
                    if i not in self._leases:
                        continue  # let go meanwhile: its lease ran out before its attempt
                    if i in renewed:
                        self._leases[i] = until
                    else:  # no longer ours (our lease ran out and another claimant took it)
                        del self._leases[i]
                        self._lease_claim.pop(i, None)
        if len(renewed) < len(ids):
            logger.warning(
                "%s: %d deliveries were no longer leased to us at renewal; their results will not be recorded",
                self.owner,
                len(ids) - len(renewed),
            )
        return len(renewed)

    def held(self) -> int:
        """Rows held right now (claimed, not yet recorded or given back)."""
        with self._lease_lock:
            return len(self._leases)

    def _lease_lost(self, claimed: ClaimedDelivery) -> bool:
        """Whether ``claimed`` may no longer be attempted here: a renewal found it re-claimed
        by another owner, or its lease ran out (this process stalled, or could not reach the
        database for a whole lease), so another worker may hold it now. Checked when an
        attempt starts, so a stalled worker that wakes up does not repeat the claims it had
        queued: its repeats stay bounded by the attempts it had running (at most
        ``delivery_concurrency``). The row is simply let go; whoever claims it delivers it."""
        if claimed.lease_until is None:
            return False  # not a leased claim: nothing to lose
        with self._lease_lock:
            lease = self._leases.get(claimed.id)
            if lease is not None and lease > utcnow():
                return False
            self._drop_lease(claimed)
        logger.warning(
            "%s: delivery %s was not attempted: its lease ran out before the attempt could start",
            self.owner,
            claimed.id,
        )
        return True

    def _client_recovered(self, client_id: str) -> None:
        """A retry of ``client_id`` succeeded: its retry budget is full again and its waiting
        rows become due now (the RP is back: deliver its backlog, don't sit out backoffs)."""
        with self._cond:
            self._retries.pop(client_id, None)
            self._recovered.add(client_id)
        self._wake.set()  # the claim loop resumes its rows (one writer fewer per success)

    def _resume_recovered(self) -> None:
        with self._cond:
            recovered, self._recovered = self._recovered, set()
        for client_id in recovered:
            try:
                outbox.resume_client(self.session_factory, client_id, utcnow())
            except Exception:  # the rows come due at their own time instead
                logger.exception("resuming deliveries of a recovered client failed")

    def _release_slots(self, c: ClaimedDelivery) -> None:
        host = target_host(c.target_uri)
        with self._cond:
            self._running_total -= 1
            self._burst_running.discard(c.id)
            self._running_client[c.client_id] -= 1
            if self._running_client[c.client_id] <= 0:
                del self._running_client[c.client_id]
            self._running_host[host] -= 1
            if self._running_host[host] <= 0:
                del self._running_host[host]

    def _run(self, claimed: ClaimedDelivery, fut: Future[str]) -> None:
        state = "error"
        released = False

        def free_slots() -> None:
            nonlocal released
            if not released:
                released = True
                self._release_slots(claimed)
                try:
                    self._pump()
                except Exception:
                    logger.exception("starting queued deliveries failed")

        try:
            state = self._process(claimed, free_slots)
        finally:
            free_slots()
            fut.set_result(state)

    def _process(self, claimed: ClaimedDelivery, attempt_over: Callable[[], None]) -> str:
        """One attempt end to end: token, POST, record, signal. Never raises.

        ``attempt_over`` runs once the RP has answered (or failed to), before the result is
        recorded: the per-client, per-host and pool slots bound what reaches the RPs, and a
        slot held through the group commit kept the next attempt of that client waiting for
        the database (a bulk termination's 3 RPs x 4 slots spent 60% of their time so)."""
        state = "error"
        result: AttemptResult | None = None
        try:
            if self._lease_lost(claimed):
                state = LOST
                return state
            started = time.monotonic()
            try:
                result = (
                    attempt_push(  # Shared Signals push (RFC 8935): oidc_logout.ssf.push
                        self.session_factory,
                        self.poster,
                        self.keyring,
                        self.settings,
                        event_id=claimed.sid,
                        target_uri=claimed.target_uri,
                    )
                    if claimed.channel == Channel.SSF_PUSH
                    else attempt_delivery(
                        self.poster,
                        self.keyring,
                        self.settings,
                        client_id=claimed.client_id,
                        target_uri=claimed.target_uri,
                        sid=claimed.sid,
                        sub=claimed.subject,
                        alg=claimed.alg,
                    )
                )
            except Exception as exc:  # a bug must not lose the row: record it as a retry
                logger.exception("delivery %s: attempt crashed", claimed.id)
                result = AttemptResult(RETRY, None, f"internal error: {type(exc).__name__}", None, 0, None)
            else:
                self._host_feedback(claimed, result, started)
            attempt_over()
            try:
                state, next_at = self._record(claimed, result)
            except Exception as exc:
                # The row stays in_flight; it comes back when the lease expires.
                if _is_db_error(exc):
                    logger.warning("delivery %s: recording the result failed (%s)", claimed.id, _brief(exc))
                else:
                    logger.exception("delivery %s: recording the result failed", claimed.id)
                state, next_at = "error", None
            metrics.delivery_done(str(claimed.channel), state, result.duration_ms / 1000)
            log_delivery(logger, claimed, result, state, give_up=self._give_up_reason(claimed, state))
            if state == PENDING:
                self._schedule_wake(next_at)
            elif state == DELIVERED and claimed.attempts:
                self._client_recovered(claimed.client_id)
        finally:
            with self._cond:
                self._forget(claimed)
                if state in FINAL_STATES:
                    self._final[claimed.id] = state
                    while len(self._final) > _FINAL_MEMORY:
                        self._final.popitem(last=False)
                self.stats["retry" if state == PENDING else state] += 1
                self._cond.notify_all()
                refill = self._saturated and self._capacity - self._held_steady() >= self._refill_at
                if refill:  # only then count the room (a walk of the parked claims)
                    room = self._client_room()
                    refill = room is None or room >= min(self._refill_at, self._client_waiting)
                if refill:
                    self._refill_wake = True
            if refill:
                self._wake.set()  # enough slots and room are free: claim a batch more
        if self.on_result is not None and result is not None and state != LOST:
            try:
                self.on_result(claimed, result)
            except Exception:
                logger.exception("on_result hook failed")
        return state

    def _host_feedback(self, claimed: ClaimedDelivery, result: AttemptResult, started: float) -> None:
        """The answer of the target host adapts its window (host_window): a delivery widens
        it, a sign of overload halves it (once per wave)."""
        host = target_host(claimed.target_uri)
        now = time.monotonic()
        if result.outcome == AttemptOutcome.DELIVERED:
            self.host_windows.succeeded(host, now)
        elif is_overload(result) and self.host_windows.overloaded(
            host, started, now, answered=result.http_status is not None
        ):
            logger.info(
                "%s: target host %s looks overloaded (%s); at most %d deliveries to it at once now",
                self.owner,
                host,
                f"HTTP {result.http_status}" if result.http_status else "no answer",
                self.host_windows.limit(host, now),
            )

    def _give_up_reason(self, claimed: ClaimedDelivery, state: str) -> str | None:
        """Why the attempt that made a row dead gave up (its age or the optional attempt cap),
        for the log line: a dead letter reads ``dead`` with the reason, never ``retry``."""
        if state != DEAD:
            return None
        return policy.give_up_reason(
            attempts=claimed.attempts + 1,
            created_at=claimed.created_at,
            now=utcnow(),
            max_age=self.settings.delivery_max_age,
            max_attempts=self.settings.delivery_max_attempts,
        )

    def _record(self, claimed: ClaimedDelivery, result: AttemptResult) -> tuple[str, dt.datetime | None]:
        """Record one result by group commit; returns ``(state, next_attempt_at)`` once it is
        committed (or :data:`.outbox.LOST`), raises if writing it failed.

        If no write is in progress the calling thread writes its result at once. Otherwise
        it queues the result and sleeps; the writer, when done, wakes each thread of its batch
        and hands the whole queue, as the next batch, to the first thread queued (one
        wake-up per thread and batch, no thundering herd). Fencing, the attempt row and the
        returned state are per result exactly as in :func:`.outbox.record_result_detail`."""
        item = _PendingResult(claimed, result)
        with self._rec_lock:
            if self._rec_busy:
                self._rec_queue.append(item)
                batch = None
            else:
                self._rec_busy = True
                batch = [item]
        if batch is None:
            # Released when written, or when asked to write (then item.batch is set).
            while not item.wake.acquire(timeout=self.handoff_patience):
                orphan = self._adopt_orphan(item)
                if orphan is not None:
                    batch = orphan
                    break
            if batch is None:
                if item.finished:
                    return self._outcome(item)
                batch = item.batch
        try:
            self._write(batch)
        finally:
            for it in batch:
                it.finished = True
                if it is not item:
                    it.wake.release()
            with self._rec_lock:
                nxt = self._rec_queue
                if nxt:
                    self._rec_queue = []
                    nxt[0].batch = nxt  # the next writer: first queued, writes all queued
                else:
                    self._rec_busy = False
            if nxt:
                nxt[0].wake.release()
        return self._outcome(item)

    def _adopt_orphan(self, item: _PendingResult) -> list[_PendingResult] | None:
        """The batch ``item``'s thread must write itself if no writer will ever wake it, else
        None (keep waiting).

        A safety net: once (a make bench run, 2026-12-04), ten threads of an OP worker waited
        here for good, their results neither queued nor handed to a writer, and no write in
        progress; the worker then hung at exit joining them. The cause was not found. A
        result whose writer is gone is written by its own thread, and said so in the log."""
        with self._rec_lock:
            if item.finished or item.batch or self._rec_busy:
                return None  # written, handed over, or a write is running: its end wakes us
            batch = [item, *(it for it in self._rec_queue if it is not item)]
            self._rec_queue = []
            self._rec_busy = True
        logger.warning(
            "%s: %d delivery results waited %.1f s for a writer that never came; writing them",
            self.owner,
            len(batch),
            self.handoff_patience,
        )
        return batch

    @staticmethod
    def _outcome(item: _PendingResult) -> tuple[str, dt.datetime | None]:
        if item.error is not None:
            raise item.error
        return item.outcome

    def _write(self, batch: list[_PendingResult]) -> None:
        """One transaction for ``batch``; retried once (a dropped pooled connection is
        replaced on the next checkout). A retry after an ambiguous commit is harmless: the
        fence then no longer matches, nothing is written twice and the result reads LOST."""
        with self._fence_lock:
            with self._lease_lock:
                items = [(self._fresh(it.claimed), it.result) for it in batch]
            try:
                for attempt in (1, 2):
                    try:
                        outcomes = outbox.record_results(
                            self.session_factory, items, self.owner, self.settings
                        )
                    except Exception as exc:
                        if attempt == 1:
                            logger.warning(
                                "recording %d delivery results failed (%s); retrying once",
                                len(items),
                                _brief(exc),
                            )
                            continue
                        for it in batch:
                            it.error = exc
                        return
                    for it, outcome in zip(batch, outcomes):
                        it.outcome = outcome
                    return
            finally:
                # Recorded, lost or unrecordable: these attempts are over, stop renewing them
                # (an unrecorded row's lease then expires and another attempt follows).
                with self._lease_lock:
                    for it in batch:
                        self._drop_lease(it.claimed)

    def _schedule_wake(self, next_attempt_at: dt.datetime | None) -> None:
        """Make the polling thread wake exactly when this retry falls due (if before the
        next poll), so short backoffs are not rounded up to the poll interval."""
        if next_attempt_at is None:
            return
        when = time.monotonic() + max(0.0, (next_attempt_at - utcnow()).total_seconds())
        with self._cond:
            if self._next_due is None or when < self._next_due:
                self._next_due = when
        self._wake.set()  # re-evaluate the sleep time

    # -- waiting -------------------------------------------------------------------------

    def _not_final(self, pending: set[int]) -> set[int]:
        """The ids of ``pending`` not known final here (holds _cond). Looked up one by one:
        ``pending -= self._final.keys()`` would walk all of ``_final`` (up to
        ``_FINAL_MEMORY`` ids) at every wake-up, and a waiting logout wakes at every result
        (measured: a quarter of the GIL time of a 200-RP logout)."""
        final = self._final
        return {i for i in pending if i not in final}

    def wait_for(self, delivery_ids: Iterable[int], timeout: float) -> bool:
        """True if every one of ``delivery_ids`` reached a final state within ``timeout``.

        Returns as soon as the last of them is final: rows this process delivers signal their
        end through a Condition (no database polling); rows it does not hold (another
        process claimed them, or one waits for a retry) are looked up in the database, 20 ms
        after the first look and then at doubling intervals up to ``recheck_interval``."""
        deadline = time.monotonic() + max(0.0, timeout)
        pending = set(delivery_ids)
        with self._cond:
            pending = self._not_final(pending)
        next_check = 0.0
        pause = min(0.02, self.recheck_interval)
        while pending:
            now = time.monotonic()
            with self._cond:
                foreign = any(i not in self._inflight for i in pending)
            if foreign and now >= next_check:
                # Some rows are not being delivered by this process: ask the database.
                try:
                    with self.session_factory() as db:
                        pending -= outbox.final_states(db, pending).keys()
                except Exception:
                    logger.exception("checking delivery states failed")
                next_check = now + pause
                pause = min(pause * 2, self.recheck_interval)
                if not pending:
                    break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                pending = self._not_final(pending)
                if pending:
                    nap = min(remaining, self.recheck_interval)
                    if foreign:
                        nap = min(nap, max(0.001, next_check - time.monotonic()))
                    self._cond.wait(nap)
                    pending = self._not_final(pending)
        return True
