"""The address policy of the OP's outbound HTTP (SSRF guard).

Logout URIs are chosen by whoever registers a client, so an OP that POSTs to them is an
SSRF vector: ``http://169.254.169.254/`` (cloud metadata), ``http://10.0.0.5:6379/`` and the
like must never be reached. :func:`check_uri_address` refuses such URIs at registration, and
the delivery transport (:class:`oidc_logout.poster.Poster`) applies the same policy *at
connect time*:

* DNS rebinding: it resolves the host itself (:func:`_resolve_checked`), checks every
  resolved address and then connects to exactly the address that was checked. The ``Host``
  header, TLS SNI and certificate verification still use the hostname, so HTTPS works
  unchanged. There is no window between check and connect.
* No proxies (an ``HTTP_PROXY`` variable would bypass the policy), no redirects (a 3xx to
  ``http://169.254.169.254/`` is the classic bypass), connect and read timeouts and a cap on
  response bytes read.

* A name lookup is bounded too (:func:`checked_addresses` ``timeout``): ``getaddrinfo``
  cannot be interrupted, so it runs on a daemon thread the caller stops waiting for at its
  deadline (a resolver that hangs would otherwise hold a delivery slot for the resolver's own
  timeouts, up to tens of seconds). At most :data:`MAX_LOOKUPS` lookups run at once; one
  that outlives its caller finishes on its own.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from .errors import OIDCLogoutError

__all__ = [
    "AddressPolicy",
    "DisallowedAddress",
    "ResolutionTimeout",
    "check_address",
    "check_uri_address",
    "checked_addresses",
    "embedded_ipv4",
    "uri_origin",
]

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DisallowedAddress(OIDCLogoutError):
    """The URI's host is (or resolves to) an address the OP must not contact.

    Maps to ``invalid_client_metadata`` (RFC 7591 §3.2.2) when raised at registration.
    """

    error = "invalid_client_metadata"
    status_code = 400

    def __init__(self, description: str, *, address: str | None = None) -> None:
        super().__init__(description)
        self.address = address


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses outbound requests may reach.

    Public (globally routable) addresses are allowed. Everything else (loopback, private,
    link-local incl. 169.254.169.254, unique-local, unspecified, multicast, reserved, shared
    CGNAT space, documentation ranges) is refused unless it is inside ``allowlist`` or it is
    loopback and ``dev_mode`` is on.
    """

    dev_mode: bool = False
    allowlist: tuple[str, ...] = ()

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(c, strict=False) for c in self.allowlist]


def _classify(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (None if it is)."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-global"
    return None


#: IPv6 prefixes whose addresses carry the IPv4 address a packet really ends up at: a NAT64
#: gateway, a 6to4 relay or a Teredo relay forwards there. For the SSRF guard each is judged
#: like the plain IPv4 it embeds, so 2002:a9fe:a9fe:: is 169.254.169.254.
_NAT64_WKP = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 §2.1 well-known prefix
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215 local-use prefix
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056 §2
_TEREDO = ipaddress.IPv6Network("2001::/32")  # RFC 4380 §2.14


def _v4_at(value: int, *spans: tuple[int, int]) -> ipaddress.IPv4Address:
    """The IPv4 address made of the bit ``spans`` ((start, length), from the most significant
    bit of the 128-bit ``value``), concatenated."""
    out = 0
    for start, length in spans:
        out = (out << length) | ((value >> (128 - start - length)) & ((1 << length) - 1))
    return ipaddress.IPv4Address(out)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address of a translation or tunnel prefix leads to, each
    with the name of its prefix (empty for any other address)."""
    value = int(ip)
    if ip in _NAT64_WKP:
        # RFC 6052 §2.1/§2.2: the well-known prefix is only used as a /96: v4 in bits 96-127.
        return [("NAT64 64:ff9b::/96", _v4_at(value, (96, 32)))]
    if ip in _NAT64_LOCAL:
        # RFC 8215 §3 / RFC 6052 §2.2: the operator picks the prefix length (48, 56, 64 or
        # 96 inside 64:ff9b:1::/48) and we cannot know which: judge every possible position
        # (bits 64-71 are the "u" octet, never part of the IPv4 address).
        return [
            ("NAT64 64:ff9b:1::/48", v4)
            for v4 in (
                _v4_at(value, (48, 16), (72, 16)),  # /48
                _v4_at(value, (56, 8), (72, 24)),  # /56
                _v4_at(value, (72, 32)),  # /64
                _v4_at(value, (96, 32)),  # /96
            )
        ]
    if ip in _SIXTOFOUR and ip.sixtofour is not None:
        # RFC 3056 §2: 2002:V4ADDR::/48, the 6to4 router's IPv4 address in bits 16-47.
        return [("6to4 2002::/16", ip.sixtofour)]
    if ip in _TEREDO and ip.teredo is not None:
        # RFC 4380 §4: 2001:0:<server IPv4>:<flags>:<port>:<client IPv4 XOR ffffffff>;
        # the relay forwards to the client's (de-obfuscated) address. Both must be allowed.
        server, client = ip.teredo
        return [("Teredo 2001::/32", server), ("Teredo 2001::/32", client)]
    return []


def _judge(
    ip: IPAddress, *, dev_mode: bool, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str | None:
    """Why the policy refuses ``ip`` (None if it admits it)."""
    reason = _classify(ip)
    if reason is None:
        return None
    for net in networks:
        if ip.version == net.version and ip in net:
            return None
    if reason == "loopback" and dev_mode:
        return None
    return reason


def check_address(address: str | IPAddress, *, dev_mode: bool, allowlist: Iterable[str] = ()) -> None:
    """Raise :class:`DisallowedAddress` unless the policy admits the IP ``address``."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    # ::ffff:169.254.169.254 is 169.254.169.254 to the kernel: judge the embedded IPv4.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    networks = AddressPolicy(dev_mode, tuple(allowlist)).networks()
    if isinstance(ip, ipaddress.IPv6Address):
        # RFC 6052 (NAT64), RFC 3056 (6to4), RFC 4380 (Teredo): such an address reaches the
        # IPv4 address it embeds, so that IPv4 is judged exactly like the plain IPv4 (its own
        # allowlist entries, loopback only in dev mode), even when the IPv6 prefix itself is
        # allowlisted or counted as global (2002::/16 is).
        for prefix, v4 in embedded_ipv4(ip):
            reason = _judge(v4, dev_mode=dev_mode, networks=networks)
            if reason is not None:
                raise DisallowedAddress(
                    f"address {ip} embeds {v4} ({prefix}), which is {reason} and not allowed", address=str(ip)
                )
    reason = _judge(ip, dev_mode=dev_mode, networks=networks)
    if reason is not None:
        raise DisallowedAddress(f"address {ip} is {reason} and not allowed", address=str(ip))


def _resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    """``getaddrinfo`` for TCP (a seam for tests that simulate DNS rebinding or a slow resolver)."""
    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)


#: Name lookups running at once in this process (each on its own daemon thread); a caller
#: that finds them all busy waits for one within its own timeout.
MAX_LOOKUPS = 32
_lookups = threading.BoundedSemaphore(MAX_LOOKUPS)


def _reset_lookups() -> None:
    # A lookup thread running at fork time does not exist in the child: its slot would never
    # be given back there.
    global _lookups
    _lookups = threading.BoundedSemaphore(MAX_LOOKUPS)


os.register_at_fork(after_in_child=_reset_lookups)


class ResolutionTimeout(TimeoutError):
    """The name lookup did not finish within the caller's timeout."""


def _resolve_within(host: str, port: int, timeout: float | None) -> list[tuple[Any, ...]]:
    """:func:`_resolve`, given up after ``timeout`` seconds (None: the resolver's own)."""
    if timeout is None:
        return _resolve(host, port)
    deadline = time.monotonic() + max(0.0, timeout)
    slots = _lookups
    if not slots.acquire(timeout=max(0.0, timeout)):
        raise ResolutionTimeout(f"no name lookup slot free within {timeout:g} s")
    result: list[Any] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            result.append(_resolve(host, port))
        except BaseException as exc:  # handed to the caller, if it still waits
            result.append(exc)
        finally:
            slots.release()
            done.set()

    try:
        threading.Thread(target=lookup, name="oidc-logout-dns", daemon=True).start()
    except BaseException:
        slots.release()
        raise
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise ResolutionTimeout(f"name lookup took longer than {timeout:g} s")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]  # type: ignore[no-any-return]


def _resolve_checked(
    host: str, port: int, policy: AddressPolicy, timeout: float | None = None
) -> list[tuple[Any, ...]]:
    """Resolve ``host`` and check every address; refuse if ANY of them is disallowed (a name
    that resolves to both a public and a private address is not trustworthy)."""
    host = host.strip("[]")
    infos = _resolve_within(host, port, timeout)
    if not infos:
        raise DisallowedAddress(f"host {host!r} does not resolve")
    for info in infos:
        check_address(info[4][0].split("%", 1)[0], dev_mode=policy.dev_mode, allowlist=policy.allowlist)
    return infos


def uri_origin(parts: SplitResult) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an outbound URI (the host without IPv6 brackets); refuses
    what is not http(s) with a host and a valid port."""
    if parts.scheme not in ("http", "https"):
        raise DisallowedAddress("only http and https URIs can be contacted")
    host = parts.hostname
    if not host:
        raise DisallowedAddress("URI has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DisallowedAddress("URI has an invalid port") from None
    return parts.scheme, host, port


def checked_addresses(
    host: str, port: int, policy: AddressPolicy, *, timeout: float | None = None
) -> list[str]:
    """The addresses to connect to for ``host``, every one admitted by ``policy``: an IP
    literal itself (judged without any DNS query), else every address it resolves to (all
    must be admitted). Raises :class:`DisallowedAddress`, :class:`socket.gaierror` when the
    name does not resolve, or :class:`ResolutionTimeout` when the lookup takes longer than
    ``timeout`` seconds."""
    try:
        literal = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None:
        check_address(literal, dev_mode=policy.dev_mode, allowlist=policy.allowlist)
        return [host]
    return [info[4][0] for info in _resolve_checked(host, port, policy, timeout)]


#: How long registration waits for the name of an outbound URI to resolve.
REGISTRATION_LOOKUP_TIMEOUT = 5.0


def check_uri_address(
    uri: str,
    *,
    dev_mode: bool,
    allowlist: Iterable[str] = (),
    timeout: float = REGISTRATION_LOOKUP_TIMEOUT,
) -> None:
    """Refuse ``uri`` if its host is, or resolves to, a disallowed address, or does not
    resolve within ``timeout`` seconds (a request thread is not held by a slow resolver).

    Used at client registration (backchannel_logout_uri and other outbound URIs) and,
    through the pinned connections of :class:`oidc_logout.poster.Poster`, again at every connect.
    An IP literal is judged without any DNS query; no traffic is ever sent.
    """
    _scheme, host, port = uri_origin(urlsplit(uri))
    try:
        checked_addresses(host, port, AddressPolicy(dev_mode, tuple(allowlist)), timeout=timeout)
    except socket.gaierror:
        raise DisallowedAddress(f"host {host!r} does not resolve") from None
    except ResolutionTimeout:
        raise DisallowedAddress(f"host {host!r} did not resolve within {timeout:g} s") from None
