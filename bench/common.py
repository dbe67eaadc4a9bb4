"""Shared benchmark helpers: a loopback RP receiver (the shared capture server of
``oidc_logout.testing``), an OP server launcher, data seeding through the storage models, /proc
readings and statistics.

Every server here binds 127.0.0.1 only; every loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from oidc_logout.testing import CaptureServer, Reply

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres:test@127.0.0.1:5432/test")
PASSWORD = "bench-password"


# --------------------------------------------------------------------------- statistics


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p95(xs: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (with 5 samples it is the maximum)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal and pasteable into docs)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- /proc


def proc_status(pid: int, field: str) -> int:
    """A kB field of /proc/<pid>/status (VmHWM, VmRSS), in KiB; 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            txt = (task / "children").read_text().split()
            out.extend(int(x) for x in txt)
    except OSError:
        pass
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live children (gunicorn master + workers)."""
    return proc_cpu(pid) + sum(proc_cpu(c) for c in children(pid))


# --------------------------------------------------------------------------- RP receiver


class Receiver(CaptureServer):
    """Loopback RP back-channel endpoints on the shared capture server
    (:class:`oidc_logout.testing.CaptureServer`: threaded HTTP/1.1, keep-alive, backlog 1024).
    Every path is an RP; each answers 200 after ``delay`` seconds. ``arm_hang(path, sid)`` makes
    the first request for that (path, sid) never answer (held open for at most
    ``hang_seconds``, then the connection is closed). ``record=False`` keeps counts only.
    ``GET /__stats`` answers ``{"count": requests to every other path}``."""

    def __init__(
        self, delay: float = 0.0, hang_seconds: float = 30.0, port: int = 0, record: bool = True
    ) -> None:
        super().__init__(port=port, default=Reply(delay=delay), record=record, hang_timeout=hang_seconds)
        self._expect: set[tuple[str, str | None]] = set()
        self.script(
            "/__stats",
            lambda _req: Reply(
                200,
                {"Content-Type": "application/json"},
                json.dumps({"count": self.count() - self.count("/__stats")}).encode(),
            ),
        )

    @property
    def base(self) -> str:
        return self.base_url

    def expect(self, keys: Iterable[tuple[str, str | None]]) -> None:
        """Start waiting for one token per (path, sid); forgets earlier requests."""
        self._expect = set(keys)
        self.clear()

    def arm_hang(self, path: str, sid: str) -> None:
        self.once(path, Reply(hang=True), where=lambda r: r.sid == sid)

    def _first_arrivals(self) -> dict[tuple[str, str | None], float]:
        first: dict[tuple[str, str | None], float] = {}
        for r in self.requests:
            first.setdefault((r.path, r.sid), r.at)
        return first

    def wait_all(self, timeout: float) -> float | None:
        """Monotonic time of the last expected arrival, or None on timeout."""
        want = self._expect
        if not self.wait_until(lambda reqs: want <= {(r.path, r.sid) for r in reqs}, timeout):
            return None
        first = self._first_arrivals()
        return max((first[k] for k in want), default=0.0)

    def missing(self) -> int:
        return len(self._expect - set(self._first_arrivals()))


def receiver_main() -> None:
    """``python -m bench.common receiver --port P --delay S``: a receiver in its own process
    (so that its CPU does not share the GIL with the OP being measured)."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--max-seconds", type=float, default=600.0)
    a = p.parse_args(sys.argv[2:])
    r = Receiver(delay=a.delay, port=a.port, record=False)
    print(f"READY {r.port}", flush=True)
    deadline = time.monotonic() + a.max_seconds  # stops by itself
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    r.stop()


class Proc:
    """A child process that prints ``READY ...`` when it serves; stopped with SIGTERM."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        ready: str | None = "READY",
        timeout: float = 60.0,
        stderr_ready: bool = False,
    ) -> None:
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.lines: list[str] = []
        self.p = subprocess.Popen(
            args,
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.ready_line = ""
        self._ready = threading.Event()
        self._want = ready
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()
        if ready is None:
            self._ready.set()
        elif not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"{args[:4]} did not get ready:\n" + "\n".join(self.lines[-30:]))

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            line = line.rstrip("\n")
            if len(self.lines) < 5000:
                self.lines.append(line)
            if not self._ready.is_set() and self._want is not None and self._want in line:
                self.ready_line = line
                self._ready.set()

    @property
    def pid(self) -> int:
        return self.p.pid

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; then the same to any of its children
        still alive (a server's workers): a worker that outlived its killed master kept
        running after a bench, an orphan holding its port and database."""
        kids = children(self.p.pid)
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        _stop_pids([k for k in kids if _alive(k)], timeout=5.0)
        return self.p.returncode


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    state = ""
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _stop_pids(pids: list[int], timeout: float) -> None:
    """SIGTERM ``pids``, SIGKILL those alive after ``timeout`` seconds."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def start_receiver_process(delay: float = 0.0, max_seconds: float = 600.0) -> tuple[Proc, str]:
    proc = Proc(
        [PYTHON, "-m", "bench.common", "receiver", "--delay", str(delay), "--max-seconds", str(max_seconds)]
    )
    port = int(proc.ready_line.split()[1])
    return proc, f"http://127.0.0.1:{port}"


def receiver_count(base: str) -> int:
    import requests

    return int(requests.get(base + "/__stats", timeout=5).json()["count"])


# --------------------------------------------------------------------------- OP server


def op_env(database_url: str, port: int, *, background: bool, **settings: Any) -> dict[str, str]:
    return {
        "BENCH_OP_DB": database_url,
        "BENCH_OP_ISSUER": f"http://127.0.0.1:{port}",
        "BENCH_OP_BACKGROUND": "1" if background else "0",
        "BENCH_OP_SETTINGS": json.dumps(settings),
    }


def bench_settings(issuer: str, database_url: str, **overrides: Any):  # type: ignore[no-untyped-def]
    from oidc_logout.config import Settings

    return Settings(
        issuer=issuer, database_url=database_url, dev_mode=True, expiry_sweep_interval=0, **overrides
    )


def start_op(
    database_url: str, *, server: str = "werkzeug", workers: int = 1, background: bool = True, **settings: Any
) -> tuple[Proc, str]:
    """Run the demo IdP app (``create_idp_app``) in its own process on a loopback port,
    served by werkzeug (threaded) or gunicorn (``workers`` sync workers)."""
    port = free_port()
    env = op_env(database_url, port, background=background, **settings)
    if server == "gunicorn":
        args = [
            PYTHON,
            "-m",
            "gunicorn",
            "bench.op_server:wsgi_app()",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(workers),
            "--worker-class",
            "sync",
            "--backlog",
            "2048",
            "--log-level",
            "info",
            "--graceful-timeout",
            "5",
        ]
        proc = Proc(args, env=env, ready="Listening at", timeout=60)
    else:
        proc = Proc([PYTHON, "-m", "bench.op_server"], env=env)
    _wait_http(f"http://127.0.0.1:{port}/.well-known/openid-configuration", 30)
    return proc, f"http://127.0.0.1:{port}"


def _wait_http(url: str, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


# --------------------------------------------------------------------------- databases


def create_pg_database() -> tuple[str, str]:
    """A fresh PostgreSQL database of our own: (name, SQLAlchemy URL)."""
    import psycopg

    name = f"oidc_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return name, f"{base}/{name}"


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_database(kind: str, prefix: str = "bench-") -> Iterator[str]:
    """The URL of a new empty database of ``kind`` (``sqlite``: a file in a temporary
    directory; ``postgresql``: a database of its own), dropped afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    name = None
    try:
        if kind == "postgresql":
            name, url = create_pg_database()
        else:
            url = f"sqlite:///{tmp / 'op.db'}"
        yield url
    finally:
        if name:
            drop_pg_database(name)
        shutil.rmtree(tmp, ignore_errors=True)


def make_provider(database_url: str, issuer: str = "http://127.0.0.1:9", **overrides: Any):  # type: ignore[no-untyped-def]
    """A migrated Provider (keys created) in this process; the background is not started."""
    from oidc_logout.demo.users import DemoUsers
    from oidc_logout.provider import Provider

    provider = Provider(bench_settings(issuer, database_url, **overrides), DemoUsers(PASSWORD))
    provider.setup()
    return provider


def rp_meta(
    client_id: str, backchannel_uri: str | None, *, alg: str = "RS256", secret: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "client_id": client_id,
        "client_name": client_id,
        "redirect_uris": [f"http://127.0.0.1:9/{client_id}/callback"],
        "post_logout_redirect_uris": [f"http://127.0.0.1:9/{client_id}/logged-out"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "openid profile email offline_access",
        "token_endpoint_auth_method": "client_secret_basic",
        "client_secret": secret or f"secret-{client_id}-" + "x" * 20,
        "id_token_signed_response_alg": alg,
    }
    if backchannel_uri:
        meta["backchannel_logout_uri"] = backchannel_uri
        meta["backchannel_logout_session_required"] = True
    return meta


def seed_sessions(
    factory: Any, subject: str, n_sessions: int, client_ids: Sequence[str], *, tokens: bool = True
) -> list[str]:
    """``n_sessions`` live OP sessions of ``subject``, each with every client as participant
    and (``tokens``) one grant with an access and a refresh token per participant, inserted
    in bulk through the storage models. Returns the sids."""
    from sqlalchemy import insert

    from oidc_logout.storage.models import Grant, OPSession, SessionParticipant, Token
    from oidc_logout.tokens import new_id, new_token, token_hash

    now = dt.datetime.now(dt.UTC)
    exp = now + dt.timedelta(hours=1)
    sids = [new_id() for _ in range(n_sessions)]
    sessions = [
        dict(
            sid=s,
            cookie_hash=token_hash(new_token()),
            subject=subject,
            auth_time=now,
            created_at=now,
            last_seen_at=now,
        )
        for s in sids
    ]
    parts, grants, toks = [], [], []
    for s in sids:
        for c in client_ids:
            parts.append(dict(sid=s, client_id=c, first_at=now, last_at=now))
            if tokens:
                gid = new_id(16)
                grants.append(
                    dict(
                        id=gid,
                        client_id=c,
                        grant_type="authorization_code",
                        subject=subject,
                        sid=s,
                        scope="openid",
                        offline=False,
                        credential_version=1,
                        created_at=now,
                    )
                )
                for kind in ("access_token", "refresh_token"):
                    toks.append(
                        dict(
                            token_hash=token_hash(new_token()),
                            kind=kind,
                            grant_id=gid,
                            client_id=c,
                            subject=subject,
                            sid=s,
                            scope="openid",
                            issued_at=now,
                            expires_at=exp,
                        )
                    )
    with factory.begin() as db:
        for model, rows in (
            (OPSession, sessions),
            (SessionParticipant, parts),
            (Grant, grants),
            (Token, toks),
        ):
            for i in range(0, len(rows), 2000):
                if rows[i : i + 2000]:
                    db.execute(insert(model), rows[i : i + 2000])
    return sids


def seed_access_tokens(factory: Any, client_id: str, n: int) -> list[str]:
    """``n`` valid access tokens of ``client_id`` (one client_credentials grant each);
    returns the token values (only their hashes are stored)."""
    from sqlalchemy import insert

    from oidc_logout.storage.models import Grant, Token
    from oidc_logout.tokens import new_id, new_token, token_hash

    now = dt.datetime.now(dt.UTC)
    exp = now + dt.timedelta(hours=2)
    values = [new_token() for _ in range(n)]
    grants, toks = [], []
    for v in values:
        gid = new_id(16)
        grants.append(
            dict(
                id=gid,
                client_id=client_id,
                grant_type="client_credentials",
                subject=None,
                sid=None,
                scope="read",
                offline=False,
                credential_version=1,
                created_at=now,
            )
        )
        toks.append(
            dict(
                token_hash=token_hash(v),
                kind="access_token",
                grant_id=gid,
                client_id=client_id,
                subject=None,
                sid=None,
                scope="read",
                issued_at=now,
                expires_at=exp,
            )
        )
    with factory.begin() as db:
        for i in range(0, n, 2000):
            db.execute(insert(Grant), grants[i : i + 2000])
            db.execute(insert(Token), toks[i : i + 2000])
    return values


def signing_rate(key: Any, seconds: float, max_n: int) -> tuple[float, int]:
    """Single-thread logout tokens signed per second with ``key`` (a LoadedKey), exactly as
    a delivery attempt builds them. Bounded by ``seconds`` and ``max_n``."""
    from oidc_logout.backchannel.logout_token import logout_token_claims, sign_logout_token

    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while n < max_n and (n < 20 or time.perf_counter() < deadline):
        claims = logout_token_claims(
            issuer="http://127.0.0.1:9",
            client_id="rp",
            sub="bench-user",
            sid=secrets.token_urlsafe(16),
            now=int(time.time()),
            lifetime=120,
        )
        sign_logout_token(claims, key)
        n += 1
    return n / (time.perf_counter() - t0), n


# --------------------------------------------------------------------------- revocation load


def basic_authorization(client_id: str, secret: str) -> str:
    """The ``Authorization`` header value of HTTP Basic client credentials."""
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def revocation_load(
    url: str,
    tokens: Sequence[str],
    concurrency: int,
    max_seconds: float,
    *,
    client: tuple[str, str],
    get: bool = False,
) -> dict[str, Any]:
    """POST the revocation endpoint ``url`` once per token (``token_type_hint=access_token``,
    HTTP Basic ``client`` credentials) from ``concurrency`` threads, each with its own
    keep-alive ``http.client`` connection (re-opened when the server closes it); bounded by
    len(tokens) and ``max_seconds``. ``get``: a bare ``GET url`` instead, once per item (a
    floor). Returns requests, wall, rps, statuses, errors and client_cpu (this process's CPU)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    headers = {
        "Authorization": basic_authorization(*client),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    lock = threading.Lock()
    it = iter(tokens)
    statuses: dict[int, int] = {}
    errors = [0]
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        while time.monotonic() < deadline:
            with lock:
                tok = next(it, None)
            if tok is None:
                break
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                if get:
                    conn.request("GET", parts.path)
                else:
                    body = f"token={tok}&token_type_hint=access_token"
                    conn.request("POST", parts.path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                with lock:
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                with lock:
                    errors[0] += 1
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    c0 = time.process_time()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_seconds + 30)
    wall = time.perf_counter() - t0
    n = sum(statuses.values())
    return {
        "requests": n,
        "wall": wall,
        "rps": n / wall if wall else 0.0,
        "statuses": statuses,
        "errors": errors[0],
        "client_cpu": time.process_time() - c0,
    }


def write_summary(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "receiver":
        receiver_main()
    else:
        print("usage: python -m bench.common receiver [--port P] [--delay S]", file=sys.stderr)
        raise SystemExit(2)


# --------------------------------------------------------------------------- profiling


def _group(filename: str, funcname: str) -> str:
    f = filename.replace("\\", "/")
    if "site-packages/" in f:
        pkg = f.split("site-packages/", 1)[1].split("/", 1)[0]
        return pkg.split(".")[0].lstrip("_")
    if "/oidc_logout/" in f:
        return "oidc_logout." + f.split("/oidc_logout/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/bench/" in f:
        return "bench"
    if f == "~":  # built-ins: name the C function
        if "sqlite3" in funcname:
            return "sqlite3 (C)"
        if "psycopg" in funcname or "pq" in funcname:
            return "psycopg (C)"
        if (
            "socket" in funcname
            or "recv" in funcname
            or "send" in funcname
            or "select" in funcname
            or "poll" in funcname
        ):
            return "socket I/O (C)"
        if "acquire" in funcname or "wait" in funcname:
            return "locks/waits (C)"
        return "builtins (C)"
    return "stdlib"


def profile_report(prof: Any, per: int, top: int = 18) -> str:
    """Self time of a cProfile run grouped by package, plus the top functions, in ms per
    operation (``per`` operations were profiled)."""
    import pstats

    st = pstats.Stats(prof)
    groups: dict[str, float] = {}
    total = 0.0
    funcs = []
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        g = _group(filename, name)
        groups[g] = groups.get(g, 0.0) + tt
        total += tt
        funcs.append((tt, ct, nc, f"{Path(filename).name}:{line}({name})" if filename != "~" else name))
    lines = [
        f"profiled {per} operations, {total / per * 1000:.2f} ms self time per operation",
        table(
            ["where (self time)", "ms/op", "share"],
            [
                [g, f"{t / per * 1000:.3f}", f"{t / total * 100:.0f}%"]
                for g, t in sorted(groups.items(), key=lambda kv: -kv[1])
                if t / total >= 0.01
            ],
        ),
    ]
    funcs.sort(reverse=True)
    lines.append(
        table(
            ["top functions by self time", "self ms/op", "cum ms/op", "calls/op"],
            [
                [n, f"{tt / per * 1000:.3f}", f"{ct / per * 1000:.3f}", f"{nc / per:.1f}"]
                for tt, ct, nc, n in funcs[:top]
            ],
        )
    )
    return "\n\n".join(lines)


def cumulative_of(prof: Any, per: int, names: Sequence[str]) -> str:
    """Cumulative ms per operation of the named functions (substring of file:func)."""
    import pstats

    st = pstats.Stats(prof)
    rows = []
    for want in names:
        best = None
        for (filename, _line, name), (_cc, nc, _tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
            label = f"{Path(filename).name}:{name}"
            if want in label and (best is None or ct > best[1]):
                best = (label, ct, nc)
        if best:
            rows.append([want, f"{best[1] / per * 1000:.3f}", f"{best[2] / per:.1f}"])
    return table(["function (cumulative, incl. callees)", "ms/op", "calls/op"], rows)
