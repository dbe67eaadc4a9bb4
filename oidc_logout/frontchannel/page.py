"""Front-Channel Logout §2/§3: the iframe URLs the logged-out page renders."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_plus, urlencode, urlsplit, urlunsplit

from ..uris import origin


def iframe_url(frontchannel_logout_uri: str, issuer: str, sid: str | None) -> str:
    """The iframe ``src`` for one RP.

    §2: "The OP MAY add these query parameters when rendering the logout URI, and if either
    is included, both MUST be" (iss and sid); the registered URI's query component "MUST be
    retained when adding additional query parameters". The registered query is kept byte for
    byte (only a registered ``iss``/``sid`` pair is dropped, so the ones we add are the only
    ones); ``iss`` and ``sid`` are appended, both or neither.
    """
    if not sid:
        return frontchannel_logout_uri
    parts = urlsplit(frontchannel_logout_uri)
    kept = [p for p in parts.query.split("&") if p and unquote_plus(p.split("=", 1)[0]) not in ("iss", "sid")]
    kept.append(urlencode([("iss", issuer), ("sid", sid)]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), ""))


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


__all__ = ["Frame", "frame_origins", "iframe_url"]
