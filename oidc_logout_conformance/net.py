"""Target guard: by default the runner only talks to loopback addresses (127.0.0.1, ::1,
localhost). ``--allow-remote`` lifts this for testing a deployed OP or RP."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = {"localhost"}


class TargetNotAllowed(ValueError):
    pass


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_target(url: str, allow_remote: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetNotAllowed(f"{url!r} is not an http(s) URL")
    if not allow_remote and not is_loopback(url):
        raise TargetNotAllowed(f"{url!r} is not a loopback address; pass --allow-remote to test it")
    return url
