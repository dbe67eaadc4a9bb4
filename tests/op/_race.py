"""Real concurrent HTTP requests against a live OP: threads released together by a barrier."""

from __future__ import annotations

import threading
from typing import Any

import requests


def race_posts(
    url: str,
    data: dict[str, str],
    n: int,
    auth: tuple[str, str] | None = None,
) -> list[requests.Response]:
    """POST the same form ``n`` times at once (one thread and connection each, released by a
    barrier), return the responses in thread order; fail if any thread raised."""
    prepared = requests.Request("POST", url, data=data, auth=auth).prepare()
    barrier = threading.Barrier(n)
    results: list[requests.Response | None] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with requests.Session() as http:
                barrier.wait(10)
                results[i] = http.send(prepared, timeout=60)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a request did not finish"
    return [r for r in results if r is not None]


def summary(responses: list[requests.Response]) -> list[tuple[int, Any]]:
    """(status, OAuth error or None) per response, for assertion messages (no token values)."""
    out: list[tuple[int, Any]] = []
    for r in responses:
        try:
            err = r.json().get("error") if r.status_code != 200 else None
        except ValueError:
            err = r.text[:80]
        out.append((r.status_code, err))
    return out
