r"""The delivery dispatcher: claims due outbox rows and delivers them in parallel.

Embedded mode (the default): one :class:`Dispatcher` per OP process runs a background thread
that polls the outbox (every ``poll_interval`` seconds, immediately when :meth:`kick`-ed and
exactly when a scheduled retry falls due). Deliveries to different RPs run concurrently in a
bounded thread pool (``settings.delivery_concurrency``) that shares one pooled,
address-policed :class:`requests.Session`; every request has (connect, read) timeouts, so a
hanging RP occupies one pool slot for at most its timeout and delays nobody else.

The logout response :meth:`kick`\ s the dispatcher right after the termination commits, then
:meth:`wait_for` with a bound ("wait a little, then let the background finish"). Completions
are signalled through a Condition, so waiting costs no database polling for rows this
process delivers; rows delivered by another process are re-checked in the database at most
every ``recheck_interval``.

Bounds against one target: at most ``delivery_max_concurrent_per_client`` attempts of one
client and ``delivery_max_concurrent_per_host`` attempts to one target host run at once in a
process, and a client gets at most ``delivery_client_retry_budget`` retries per
``delivery_client_retry_window`` seconds (a token bucket: a failing RP is still probed every
window/budget seconds, and its first success makes its backlog due at once). A claim over a
bound waits in a short local queue
(as many as the bound allows to run) or goes back to the outbox, pending and due a little later
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
takes new work only after its result is committed, so at most ``delivery_concurrency``
attempts can have reached an RP without being recorded (the bound on repeats after a crash).
Claims are refilled in batches: the polling thread is woken to claim again only when at least
half of ``delivery_concurrency`` claim slots are free, not after every completed attempt.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from urllib.parse import urlsplit

import requests

from .. import metrics
from .._http import make_session
from ..backchannel.request import RETRY, AttemptResult, attempt_delivery
from ..chunks import advance as advance_terminations
from ..config import Settings
from ..keys import KeyRing
from ..logs import log_delivery
from ..ssf.push import attempt_push
from ..storage.base import utcnow
from ..storage.models import DELIVERED, FINAL_STATES, PENDING
from ..vocabulary import Channel
from . import outbox
from .outbox import LOST, ClaimedDelivery, SessionFactory

__all__ = ["Dispatcher", "default_owner"]

logger = logging.getLogger(__name__)

OnResult = Callable[[ClaimedDelivery, AttemptResult], None]

#: How many completed ids are remembered for :meth:`Dispatcher.wait_for`.
_FINAL_MEMORY = 100_000

#: The outcome of a claim given back unattempted (a bound was reached; see the module doc).
DEFERRED = "deferred"


def target_host(uri: str) -> str:
    """The host a delivery goes to, as the per-host bound counts it."""
    try:
        host = urlsplit(uri).hostname or ""
    except ValueError:
        host = ""
    return host.rstrip(".").lower()


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
        http: requests.Session | None = None,
        poll_interval: float = 0.5,
        recheck_interval: float = 0.5,
    ) -> None:
        self.session_factory = session_factory
        self.keyring = keyring
        self.settings = settings
        self.owner = (owner or default_owner())[:64]
        self.on_result = on_result
        self.poll_interval = poll_interval
        self.recheck_interval = recheck_interval
        self._own_http = http is None
        self.http = http or make_session(
            concurrency=settings.delivery_concurrency,
            dev_mode=settings.dev_mode,
            allowlist=settings.address_allowlist,
        )
        self._concurrency = max(1, settings.delivery_concurrency)
        #: Claims held at once (running + queued); more would only hold leases idle.
        self._capacity = self._concurrency * 2
        #: A saturated dispatcher claims again once this many claim slots are free (a batch
        #: per claim transaction instead of one claim per completed attempt).
        self._refill_at = max(1, self._concurrency // 2)
        # Group commit of results (see _record).
        self._rec_lock = threading.Lock()
        self._rec_queue: list[_PendingResult] = []
        self._rec_busy = False
        self._executor = ThreadPoolExecutor(
            max_workers=self._concurrency, thread_name_prefix="oidc-logout-delivery"
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
        self._per_host = max(1, settings.delivery_max_concurrent_per_host)
        self._running_total = 0
        self._running_client: Counter[str] = Counter()
        self._running_host: Counter[str] = Counter()
        self._parked: deque[ClaimedDelivery] = deque()
        #: Clients whose retry just succeeded: the claim loop makes their waiting rows due.
        self._recovered: set[str] = set()
        #: Per-client retry token buckets: client_id -> (tokens, last refill, monotonic).
        self._retries: dict[str, tuple[float, float]] = {}
        #: How long a claim over a bound waits in the outbox before it is claimed again.
        self.defer_delay = max(0.05, poll_interval)

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
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._own_http:
            self.http.close()
        return done

    def drain(self, timeout: float) -> bool:
        """Wait for running attempts; release (back to pending) claims not yet started."""
        with self._cond:
            items = list(self._inflight.values())
        not_started = [c for c, fut in items if fut.cancel()]
        if not_started:
            try:
                n = outbox.release(self.session_factory, not_started, self.owner)
                logger.info("%s released %d unstarted claims", self.owner, n)
            except Exception:  # the leases will expire instead
                logger.exception("releasing unstarted claims failed")
            with self._cond:
                for c in not_started:
                    self._inflight.pop(c.id, None)
        running = [fut for _c, fut in items if not fut.cancelled()]
        _done, not_done = futures_wait(running, timeout=timeout)
        return not not_done

    # -- the loop ------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Poll-claim-dispatch until :meth:`request_stop` (the thread body; the worker runs
        it in the foreground)."""
        logger.info("delivery dispatcher %s started", self.owner)
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                claimed = self._cycle()
            except Exception:
                logger.exception("claiming due deliveries failed; retrying shortly")
                claimed = 0
            if claimed and not self._saturated:
                continue  # there may be more due rows right now
            self._wake.wait(self._sleep_time())
        logger.info("delivery dispatcher %s stopped claiming", self.owner)

    def _sleep_time(self) -> float:
        now = time.monotonic()
        delay = self.poll_interval
        with self._cond:
            if self._next_due is not None:
                delay = min(delay, max(0.0, self._next_due - now))
        return delay

    def _cycle(self) -> int:
        advance_terminations(self.session_factory, self.settings)  # chunked terminations' rows
        self._resume_recovered()
        with self._cond:
            free = self._capacity - len(self._inflight)
            if self._next_due is not None and self._next_due <= time.monotonic():
                self._next_due = None
        self._saturated = free <= 0
        if free <= 0:
            return 0
        limit = min(self.settings.delivery_batch_size, free)
        claims = outbox.claim_due(
            self.session_factory, self.owner, limit, self.settings.delivery_lease_seconds
        )
        self._submit(claims)
        self._saturated = len(claims) >= free
        return len(claims)

    # -- delivering ----------------------------------------------------------------------

    def deliver_now(self, ids: Iterable[int]) -> list[int]:
        """Claim the given rows (those still due) and start delivering them in parallel;
        returns the ids claimed here. Does not wait: use :meth:`wait_for`."""
        id_list = list(ids)
        if not id_list or self._closed:
            return []
        claims = outbox.claim_due(
            self.session_factory, self.owner, len(id_list), self.settings.delivery_lease_seconds, ids=id_list
        )
        self._submit(claims)
        return [c.id for c in claims]

    def run_once(self, timeout: float | None = None) -> dict[str, int]:
        """Claim everything due now, deliver it, record it; return outcome counts
        (``delivered``, ``retry``, ``failed``, ``dead``, ``lost``). For tests and the CLI.

        Claims given back because a per-client or per-host bound was reached are claimed
        again when due (within ``timeout``), so every row due at the start gets its attempt."""
        deadline = None if timeout is None else time.monotonic() + timeout
        counts: Counter[str] = Counter()
        batch = max(1, self.settings.delivery_batch_size)
        for _round in range(10_000):  # bounded; each round makes progress or ends
            futures: list[Future[str]] = []
            for _ in range(10_000):  # bounded: quickly re-due retries cannot loop forever
                claims = outbox.claim_due(
                    self.session_factory, self.owner, batch, self.settings.delivery_lease_seconds
                )
                futures.extend(self._submit(claims))
                if len(claims) < batch:
                    break
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            futures_wait(futures, timeout=remaining)
            deferred = 0
            for fut in futures:
                if fut.done() and not fut.cancelled():
                    state = fut.result()
                    if state == DEFERRED:
                        deferred += 1
                    else:
                        counts["retry" if state == PENDING else state] += 1
                else:
                    counts["unfinished"] += 1
            if not deferred:
                break
            if deadline is not None and time.monotonic() + self.defer_delay > deadline:
                counts["deferred"] += deferred
                break
            time.sleep(self.defer_delay)  # the deferred rows fall due again
        return dict(counts)

    def _submit(self, claims: list[ClaimedDelivery]) -> list[Future[str]]:
        """Queue claims for their attempts (started at once where the bounds allow)."""
        futures: list[Future[str]] = []
        if not claims:
            return futures
        with self._cond:
            for c in claims:
                fut: Future[str] = Future()
                self._inflight[c.id] = (c, fut)
                self._parked.append(c)
                futures.append(fut)
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
        """Start every queued claim the per-client and per-host bounds allow; keep at most a
        bound's worth waiting per client and host; give the rest back to the outbox."""
        start: list[tuple[ClaimedDelivery, Future[str]]] = []
        defer: dict[float, list[ClaimedDelivery]] = {}
        now = time.monotonic()
        with self._cond:
            keep: deque[ClaimedDelivery] = deque()
            waiting_client: Counter[str] = Counter()
            waiting_host: Counter[str] = Counter()
            for c in self._parked:
                entry = self._inflight.get(c.id)
                if entry is None or entry[1].cancelled():
                    continue  # given back by drain()
                host = target_host(c.target_uri)
                wait_budget = self._retry_budget_left(c.client_id, now) if c.attempts else None
                if wait_budget is not None:
                    # A client's retries are bounded: a failing RP is not hammered, whatever
                    # number of rows (sessions) it has. The row waits; nothing is dropped.
                    defer.setdefault(round(wait_budget, 3), []).append(c)
                elif (
                    self._running_client[c.client_id] < self._per_client
                    and self._running_host[host] < self._per_host
                ):
                    if self._running_total >= self._concurrency:
                        keep.append(c)  # only the pool is full: next free thread takes it
                        continue
                    self._running_total += 1
                    self._running_client[c.client_id] += 1
                    self._running_host[host] += 1
                    if c.attempts:
                        self._spend_retry(c.client_id, now)
                    start.append((c, entry[1]))
                elif waiting_client[c.client_id] < self._per_client and waiting_host[host] < self._per_host:
                    waiting_client[c.client_id] += 1
                    waiting_host[host] += 1
                    keep.append(c)
                else:
                    defer.setdefault(self.defer_delay, []).append(c)
            self._parked = keep
        for delay, claims in defer.items():
            self._defer(claims, delay)
        for c, fut in start:
            if not fut.set_running_or_notify_cancel():  # drain() gave it back meanwhile
                self._release_slots(c)
                continue
            try:
                self._executor.submit(self._run, c, fut)
            except RuntimeError:  # shut down meanwhile: give it back
                self._release_slots(c)
                try:
                    outbox.release(self.session_factory, [c], self.owner)
                finally:
                    with self._cond:
                        self._inflight.pop(c.id, None)
                    fut.set_result(DEFERRED)

    def _defer(self, claims: list[ClaimedDelivery], delay: float) -> None:
        until = utcnow() + dt.timedelta(seconds=delay)
        try:
            outbox.defer(self.session_factory, claims, self.owner, until)
        except Exception:  # the leases expire instead; the rows are not lost
            logger.exception("deferring %d claims failed", len(claims))
        logger.debug(
            "%s deferred %d claims by %.2f s (per-client/per-host bounds)", self.owner, len(claims), delay
        )
        with self._cond:
            for c in claims:
                entry = self._inflight.pop(c.id, None)
                if entry is not None and not entry[1].done():
                    entry[1].set_result(DEFERRED)
            self.stats[DEFERRED] += len(claims)
            self._cond.notify_all()
        self._schedule_wake(until)

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
            self._running_client[c.client_id] -= 1
            if self._running_client[c.client_id] <= 0:
                del self._running_client[c.client_id]
            self._running_host[host] -= 1
            if self._running_host[host] <= 0:
                del self._running_host[host]

    def _run(self, claimed: ClaimedDelivery, fut: Future[str]) -> None:
        state = "error"
        try:
            state = self._process(claimed)
        finally:
            self._release_slots(claimed)
            fut.set_result(state)
            try:
                self._pump()
            except Exception:
                logger.exception("starting queued deliveries failed")

    def _process(self, claimed: ClaimedDelivery) -> str:
        """One attempt end to end: token, POST, record, signal. Never raises."""
        state = "error"
        result: AttemptResult | None = None
        try:
            try:
                result = (
                    attempt_push(  # Shared Signals push (RFC 8935): oidc_logout.ssf.push
                        self.session_factory,
                        self.http,
                        self.keyring,
                        self.settings,
                        event_id=claimed.sid,
                        target_uri=claimed.target_uri,
                    )
                    if claimed.channel == Channel.SSF_PUSH
                    else attempt_delivery(
                        self.http,
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
            try:
                state, next_at = self._record(claimed, result)
            except Exception:
                # The row stays in_flight; it comes back when the lease expires.
                logger.exception("delivery %s: recording the result failed", claimed.id)
                state, next_at = "error", None
            metrics.delivery_done(str(claimed.channel), state, result.duration_ms / 1000)
            log_delivery(logger, claimed, result, state)
            if state == PENDING:
                self._schedule_wake(next_at)
            elif state == DELIVERED and claimed.attempts:
                self._client_recovered(claimed.client_id)
        finally:
            with self._cond:
                self._inflight.pop(claimed.id, None)
                if state in FINAL_STATES:
                    self._final[claimed.id] = state
                    while len(self._final) > _FINAL_MEMORY:
                        self._final.popitem(last=False)
                self.stats["retry" if state == PENDING else state] += 1
                self._cond.notify_all()
                refill = self._capacity - len(self._inflight) >= self._refill_at
            if self._saturated and refill:
                self._wake.set()  # enough slots are free: claim a batch more
        if self.on_result is not None and result is not None and state != LOST:
            try:
                self.on_result(claimed, result)
            except Exception:
                logger.exception("on_result hook failed")
        return state

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
            item.wake.acquire()  # released when written, or when asked to write
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

    @staticmethod
    def _outcome(item: _PendingResult) -> tuple[str, dt.datetime | None]:
        if item.error is not None:
            raise item.error
        return item.outcome

    def _write(self, batch: list[_PendingResult]) -> None:
        """One transaction for ``batch``; retried once (a dropped pooled connection is
        replaced on the next checkout). A retry after an ambiguous commit is harmless: the
        fence then no longer matches, nothing is written twice and the result reads LOST."""
        items = [(it.claimed, it.result) for it in batch]
        for attempt in (1, 2):
            try:
                outcomes = outbox.record_results(self.session_factory, items, self.owner, self.settings)
            except Exception as exc:
                if attempt == 1:
                    logger.warning(
                        "recording %d delivery results failed (%s); retrying once",
                        len(items),
                        type(exc).__name__,
                    )
                    continue
                for it in batch:
                    it.error = exc
                return
            for it, outcome in zip(batch, outcomes):
                it.outcome = outcome
            return

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

    def wait_for(self, delivery_ids: Iterable[int], timeout: float) -> bool:
        """True if every one of ``delivery_ids`` reached a final state within ``timeout``."""
        deadline = time.monotonic() + max(0.0, timeout)
        pending = set(delivery_ids)
        with self._cond:
            pending -= self._final.keys()
        last_check = 0.0
        while pending:
            now = time.monotonic()
            with self._cond:
                local = pending & self._inflight.keys()
            if len(local) < len(pending) and now - last_check >= self.recheck_interval:
                # Some rows are not being delivered by this process: ask the database.
                try:
                    with self.session_factory() as db:
                        pending -= outbox.final_states(db, pending).keys()
                except Exception:
                    logger.exception("checking delivery states failed")
                last_check = now
                if not pending:
                    break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                pending -= self._final.keys()
                if pending:
                    self._cond.wait(min(remaining, self.recheck_interval))
                    pending -= self._final.keys()
        return True
