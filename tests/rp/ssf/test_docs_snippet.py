"""The Shared Signals snippet in docs/rp.md really runs: it subscribes at a (loopback)
transmitter, gets verified, and a pushed session-revoked then ends a session."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from ..conftest import ServerThread
from .conftest import Transmitter, make_set

DOC = Path(__file__).resolve().parents[3] / "docs" / "rp.md"


def test_receiving_shared_signals_snippet_subscribes_verifies_and_ends_a_session(
    transmitter: Transmitter,
) -> None:
    section = DOC.read_text().split("## Receiving Shared Signals", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    code = code.replace('"https://op.example.com"', repr(transmitter.issuer)).replace(
        '"my-secret"', '"receiver-secret"'
    )
    transmitter.now = None  # the snippet's validator uses the real clock
    ns: dict[str, Any] = {"__name__": "docs_ssf_snippet"}
    exec(compile(code, str(DOC), "exec"), ns)
    server = ServerThread(ns["app"])
    try:
        code_rp_url = ns["RP_URL"]
        ns["RP_URL"] = server.url  # the snippet's subscribe() reads the global
        assert code_rp_url == "https://rp.example.com"
        ssf = ns["subscribe"]()
        assert transmitter.pushed.wait(10) and transmitter.pushes[0].status_code == 202
        assert ssf.receiver.stream.verified_at is not None
        index = ns["rp"].session_index
        index.register(transmitter.issuer, "alice", "op-sid-1", "local-1")
        (stream,) = transmitter.streams.values()
        resp = transmitter.push(stream, make_set(transmitter.issuer, now=time.time()))
        assert resp.status_code == 202
        assert index.local_sessions_for(transmitter.issuer, sid="op-sid-1") == set()
        assert [r.outcome for r in ssf.receiver.history] == ["processed", "processed"]
    finally:
        server.stop()
