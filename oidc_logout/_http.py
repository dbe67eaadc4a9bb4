"""Outbound HTTP of the OP (back-channel logout delivery) and its address policy (SSRF guard).

Logout URIs are chosen by whoever registers a client, so an OP that POSTs to them is an
SSRF vector: ``http://169.254.169.254/`` (cloud metadata), ``http://10.0.0.5:6379/`` and the
like must never be reached. :func:`check_uri_address` refuses such URIs at registration, and
the session built by :func:`make_session` applies the same policy *at connect time*:

* DNS rebinding: the connection classes below resolve the host themselves, check every
  resolved address and then connect to exactly the address that was checked (the socket is
  opened to the IP literal). The ``Host`` header, TLS SNI and certificate verification still
  use the hostname, so HTTPS works unchanged. There is no window between check and connect.
* No proxies (``trust_env`` off: an ``HTTP_PROXY`` variable would bypass the policy), no
  redirects (a 3xx to ``http://169.254.169.254/`` is the classic bypass), (connect, read)
  timeouts, a pool sized to the delivery concurrency and a cap on response bytes read.

Limitation: ``getaddrinfo`` itself is not bounded by the connect timeout (the resolver's own
timeouts apply).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util import connection as u3connection

from .errors import OIDCLogoutError

__all__ = [
    "AddressPolicy",
    "DisallowedAddress",
    "check_address",
    "check_uri_address",
    "embedded_ipv4",
    "make_session",
    "post_form",
    "read_capped",
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
    """``getaddrinfo`` for TCP (a seam for tests that simulate DNS rebinding)."""
    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)


def _resolve_checked(host: str, port: int, policy: AddressPolicy) -> list[tuple[Any, ...]]:
    """Resolve ``host`` and check every address; refuse if ANY of them is disallowed (a name
    that resolves to both a public and a private address is not trustworthy)."""
    host = host.strip("[]")
    infos = _resolve(host, port)
    if not infos:
        raise DisallowedAddress(f"host {host!r} does not resolve")
    for info in infos:
        check_address(info[4][0].split("%", 1)[0], dev_mode=policy.dev_mode, allowlist=policy.allowlist)
    return infos


def check_uri_address(uri: str, *, dev_mode: bool, allowlist: Iterable[str] = ()) -> None:
    """Refuse ``uri`` if its host is, or resolves to, a disallowed address.

    Used at client registration (backchannel_logout_uri and other outbound URIs) and,
    through the pinned connections of :func:`make_session`, again at every connect.
    An IP literal is judged without any DNS query; no traffic is ever sent.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        raise DisallowedAddress("only http and https URIs can be contacted")
    host = parts.hostname
    if not host:
        raise DisallowedAddress("URI has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DisallowedAddress("URI has an invalid port") from None
    try:
        literal = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None:
        check_address(literal, dev_mode=dev_mode, allowlist=allowlist)
        return
    try:
        _resolve_checked(host, port, AddressPolicy(dev_mode, tuple(allowlist)))
    except socket.gaierror:
        raise DisallowedAddress(f"host {host!r} does not resolve") from None


class _PinnedConnectionMixin:
    """Resolve, check, then connect to exactly the checked address (no rebinding window)."""

    address_policy: AddressPolicy = AddressPolicy()
    # Provided by urllib3's HTTPConnection:
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        try:
            infos = _resolve_checked(self._dns_host, self.port, self.address_policy)
        except socket.gaierror as e:
            raise NameResolutionError(self.host, self, e) from e  # type: ignore[arg-type]
        last: OSError | None = None
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = sockaddr[0]
            try:
                # An IP literal: urllib3 does no further DNS lookup for it.
                sock = u3connection.create_connection(
                    (ip, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
                return sock
            except TimeoutError as e:
                raise ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
                ) from e
            except OSError as e:
                last = e
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")  # type: ignore[arg-type]


class _PinnedHTTPConnection(_PinnedConnectionMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedConnectionMixin, HTTPSConnection):
    pass


class _PinnedPoolManager(PoolManager):
    """A PoolManager whose pools open only policy-checked, pinned connections."""

    def __init__(self, policy: AddressPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        http_conn = type("PolicyHTTPConnection", (_PinnedHTTPConnection,), {"address_policy": policy})
        https_conn = type("PolicyHTTPSConnection", (_PinnedHTTPSConnection,), {"address_policy": policy})
        self.pool_classes_by_scheme = {
            "http": type("PolicyHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("PolicyHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
        }


class PolicyAdapter(HTTPAdapter):
    """An HTTPAdapter that enforces an :class:`AddressPolicy` at connect time, never uses a
    proxy and never retries on its own (retries are the outbox's business)."""

    def __init__(self, policy: AddressPolicy, *, pool_connections: int, pool_maxsize: int) -> None:
        self._policy = policy
        super().__init__(
            pool_connections=pool_connections, pool_maxsize=pool_maxsize, max_retries=0, pool_block=False
        )

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _PinnedPoolManager(
            getattr(self, "_policy", AddressPolicy()),
            num_pools=connections,
            maxsize=maxsize,
            block=block,
            **pool_kwargs,
        )

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise DisallowedAddress("outbound proxies are not used for logout delivery")

    def __getstate__(self) -> dict[str, Any]:  # keep the policy when pickled
        state = super().__getstate__()
        state["_policy"] = self._policy
        return state


class _NoRedirectSession(requests.Session):
    """Never follows redirects, whatever the caller passes: a 3xx to an internal address is
    the classic way around an address check."""

    def request(
        self,
        method: Any,
        url: Any,
        *args: Any,
        **kwargs: Any,
    ) -> requests.Response:
        kwargs["allow_redirects"] = False
        return super().request(method, url, *args, **kwargs)


def make_session(
    *,
    concurrency: int = 16,
    dev_mode: bool = False,
    allowlist: Sequence[str] = (),
    user_agent: str = "oidc-logout",
) -> requests.Session:
    """A pooled :class:`requests.Session` for outbound delivery, safe to share across threads
    for plain POSTs (requests' pool is thread-safe; no cookies are relied upon).

    Redirects are never followed. Callers must pass ``timeout=(connect, read)`` and
    ``stream=True`` (then :func:`read_capped`) on each request; :mod:`.backchannel.request`
    does.
    """
    policy = AddressPolicy(dev_mode=dev_mode, allowlist=tuple(allowlist))
    policy.networks()  # validate the CIDRs now, not at first delivery
    session = _NoRedirectSession()
    session.trust_env = False  # no *_PROXY / netrc: a proxy would bypass the address policy
    session.headers["User-Agent"] = user_agent
    adapter = PolicyAdapter(policy, pool_connections=max(10, concurrency), pool_maxsize=max(1, concurrency))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def post_form(
    session: requests.Session,
    url: str,
    fields: dict[str, str],
    *,
    headers: dict[str, str],
    timeout: tuple[float, float],
) -> requests.Response:
    """POST ``fields`` form-encoded to ``url`` through ``session``'s mounted adapter, streamed
    (read the body with :func:`read_capped`), redirects not followed.

    For a session of :func:`make_session` (a :class:`PolicyAdapter` mounted, no proxies, no
    cookies, no hooks) the prepared request goes straight to the adapter: the same connection
    pool, address check, timeouts, exceptions and :class:`requests.Response` as
    ``session.post``, without :meth:`requests.Session.request`'s per-call merging of settings,
    environment, cookies and hooks (about a quarter of the CPU of a delivery's POST). Any other
    session is used through ``session.post``.
    """
    adapter = session.get_adapter(url)
    if (
        not isinstance(adapter, PolicyAdapter)
        or session.cookies
        or session.auth
        or session.trust_env
        or session.proxies
        or session.params
        or any(session.hooks.values())
    ):
        return session.post(
            url, data=fields, headers=headers, timeout=timeout, allow_redirects=False, stream=True
        )
    prepared = requests.PreparedRequest()
    merged = dict(session.headers)
    merged.update(headers)
    merged["Content-Type"] = "application/x-www-form-urlencoded"
    # Encoded here: a str body skips requests' isinstance checks against runtime Protocols.
    prepared.prepare(method="POST", url=url, headers=merged, data=urlencode(fields))
    return adapter.send(
        prepared, stream=True, timeout=timeout, verify=session.verify, cert=session.cert, proxies={}
    )


def read_capped(resp: requests.Response, max_bytes: int, deadline: float | None = None) -> tuple[bytes, bool]:
    """Read a streamed body up to ``max_bytes`` (and until the monotonic ``deadline``).

    Returns ``(body, truncated)``. When truncated the connection is closed rather than
    drained, so an RP answering an endless body costs at most ``max_bytes`` of reading.
    """
    declared = resp.headers.get("Content-Length")
    chunks: list[bytes] = []
    total = 0
    truncated = bool(declared and declared.isdigit() and int(declared) > max_bytes)
    if not truncated:
        for chunk in resp.iter_content(chunk_size=8192):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes or (deadline is not None and time.monotonic() > deadline):
                truncated = True
                break
    if truncated:
        resp.close()  # closes the socket: the unread rest is never drained into memory
    return b"".join(chunks)[:max_bytes], truncated
