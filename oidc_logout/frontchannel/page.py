"""Front-Channel Logout §3/§4: the iframe URLs the logged-out page renders."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..uris import origin


def iframe_url(frontchannel_logout_uri: str, issuer: str, sid: str | None) -> str:
    """§3: "the OP MUST add iss and sid query parameters" when it can (both or neither);
    an existing query component of the registered URI is kept."""
    if not sid:
        return frontchannel_logout_uri
    parts = urlsplit(frontchannel_logout_uri)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("iss", "sid")]
    query += [("iss", issuer), ("sid", sid)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


@dataclass(frozen=True)
class Frame:
    delivery_id: int
    url: str


def frame_origins(frames: list[Frame]) -> list[str]:
    """Origins for the page's Content-Security-Policy frame-src."""
    out = []
    for f in frames:
        scheme, host, port = origin(f.url)
        host_part = f"[{host}]" if ":" in host else host
        value = f"{scheme}://{host_part}:{port}"
        if value not in out:
            out.append(value)
    return out
