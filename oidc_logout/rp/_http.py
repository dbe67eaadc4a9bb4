"""Outbound HTTP shared by discovery, JWKS and revocation.

Every call uses (connect, read) timeouts, never follows redirects and caps the response
size, so a slow or hostile OP cannot tie up or exhaust the RP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from .errors import OutboundHTTPError

__all__ = ["HTTPLimits", "cache_ttl", "check_url", "get_json"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class HTTPLimits:
    """Timeouts (seconds) and the maximum response body size (bytes) for outbound calls."""

    connect_timeout: float = 3.05
    read_timeout: float = 10.0
    max_bytes: int = 512 * 1024

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


def check_url(url: str, what: str, error: type[OutboundHTTPError] = OutboundHTTPError) -> None:
    """Require https, except for loopback hosts (local development and tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return
    raise error("insecure_url", f"{what} must be an https URL")


def read_capped(resp: requests.Response, limits: HTTPLimits, error: type[OutboundHTTPError]) -> bytes:
    """Read at most ``limits.max_bytes`` from a streamed response, else fail."""
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        resp.close()
        raise error("response_too_large", "response exceeds the size limit")
    chunks: list[bytes] = []
    total = 0
    for chunk in resp.iter_content(chunk_size=16384):
        total += len(chunk)
        if total > limits.max_bytes:
            resp.close()
            raise error("response_too_large", "response exceeds the size limit")
        chunks.append(chunk)
    return b"".join(chunks)


def get_json(
    session: requests.Session,
    url: str,
    limits: HTTPLimits,
    error: type[OutboundHTTPError] = OutboundHTTPError,
) -> tuple[dict[str, Any], Mapping[str, str]]:
    """GET ``url`` and return (JSON object, response headers)."""
    check_url(url, "URL", error)
    try:
        resp = session.get(
            url,
            timeout=limits.timeout,
            allow_redirects=False,
            stream=True,
            headers={"Accept": "application/json"},
        )
    except requests.RequestException as exc:
        raise error("fetch_failed", f"request failed: {type(exc).__name__}") from None
    with resp:
        if resp.status_code != 200:
            raise error("bad_status", f"unexpected HTTP status {resp.status_code}")
        body = read_capped(resp, limits, error)
    try:
        data = json.loads(body)
    except ValueError:
        raise error("bad_json", "response is not JSON") from None
    if not isinstance(data, dict):
        raise error("bad_json", "response is not a JSON object")
    return data, resp.headers


_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.I)


def cache_ttl(headers: Mapping[str, str], default: float, minimum: float, maximum: float) -> float:
    """Lifetime from ``Cache-Control`` (RFC 9111 §5.2.2.1 max-age), clamped to [min, max].

    ``no-store``/``no-cache`` map to the minimum: refetching on every token would turn each
    logout request into a call to the OP.
    """
    cc = headers.get("Cache-Control", "") or ""
    lowered = cc.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        ttl = minimum
    else:
        m = _MAX_AGE.search(cc)
        ttl = float(m.group(1)) if m else default
    return max(minimum, min(maximum, ttl))
