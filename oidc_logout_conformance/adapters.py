"""Pluggable adapters.

* :class:`LoginAdapter` (op profile): authenticates the End-User at the OP when an
  authorization request lands on a login page. Built in: :class:`FormLoginAdapter`.
* :class:`SessionAdapter` (rp profile): establishes an RP session for a given (sub, sid)
  and tells whether it is still active. Built in: :class:`HttpSessionAdapter`.

Third-party adapters are named ``module:attribute`` on the command line and built with the
``--adapter-arg key=value`` options as keyword arguments.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urljoin

import requests


@runtime_checkable
class LoginAdapter(Protocol):
    def login(self, browser: requests.Session, page: requests.Response) -> requests.Response:
        """``page`` is the OP's login page the user agent was sent to. Authenticate and
        return the OP's response to the submission (redirects NOT followed)."""
        ...


@runtime_checkable
class SessionAdapter(Protocol):
    def establish(self, sub: str, sid: str | None) -> Any:
        """Create an RP session as if the user ``sub`` logged in with OP session ``sid``;
        return a handle for :meth:`is_active`."""
        ...

    def is_active(self, handle: Any) -> bool: ...


# -- HTML forms ---------------------------------------------------------------------------
@dataclass
class Form:
    action: str
    method: str
    inputs: list[tuple[str, str, str]] = field(default_factory=list)  # (name, type, value)

    def field_names(self) -> set[str]:
        return {n for n, _, _ in self.inputs}


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._current: Form | None = None
        self.iframes: list[dict[str, str]] = []
        self.links: list[dict[str, str]] = []
        self.metas: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._current = Form(a.get("action", ""), a.get("method", "get").lower())
            self.forms.append(self._current)
        elif tag in ("input", "button") and self._current is not None and a.get("name"):
            self._current.inputs.append((a["name"], a.get("type", "text").lower(), a.get("value", "")))
        elif tag == "iframe":
            self.iframes.append(a)
        elif tag == "a":
            self.links.append(a)
        elif tag == "meta":
            self.metas.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def parse_html(text: str) -> _FormParser:
    p = _FormParser()
    p.feed(text)
    p.close()
    return p


class FormLoginAdapter:
    """Generic HTML-form login: find the form with a password input, keep every hidden
    input (CSRF tokens, ``next`` ...), fill username/password, submit."""

    def __init__(
        self, username: str, password: str, username_field: str = "username", password_field: str = "password"
    ) -> None:
        self.username = username
        self.password = password
        self.username_field = username_field
        self.password_field = password_field

    def login(self, browser: requests.Session, page: requests.Response) -> requests.Response:
        parsed = parse_html(page.text)
        forms = [f for f in parsed.forms if any(t == "password" for _, t, _ in f.inputs)]
        if not forms:
            raise RuntimeError(f"no login form with a password field at {page.url}")
        form = forms[0]
        data: dict[str, str] = {}
        for name, typ, value in form.inputs:
            if typ in ("hidden",) or (typ not in ("submit", "button", "checkbox", "radio") and value):
                data[name] = value
        data[self.username_field] = self.username
        data[self.password_field] = self.password
        url = urljoin(page.url, form.action or page.url)
        if form.method == "post":
            return browser.post(url, data=data, allow_redirects=False, timeout=15)
        return browser.get(url, params=data, allow_redirects=False, timeout=15)


class HttpSessionAdapter:
    """Establishes RP sessions over HTTP: GET ``login_url`` (``{sub}`` and ``{sid}``
    substituted, URL-encoded) with a fresh cookie jar, then a session is active while GET
    ``check_url`` with that cookie jar answers ``active_status`` (redirects not followed)."""

    def __init__(self, login_url: str, check_url: str, active_status: int = 200) -> None:
        self.login_url = login_url
        self.check_url = check_url
        self.active_status = int(active_status)

    def establish(self, sub: str, sid: str | None) -> requests.Session:
        from urllib.parse import quote

        http = requests.Session()
        url = self.login_url.replace("{sub}", quote(sub, safe="")).replace("{sid}", quote(sid or "", safe=""))
        resp = http.get(url, allow_redirects=False, timeout=10)
        if resp.status_code >= 400:
            raise RuntimeError(f"session login URL answered {resp.status_code}")
        return http

    def is_active(self, handle: requests.Session) -> bool:
        resp = handle.get(self.check_url, allow_redirects=False, timeout=10)
        return resp.status_code == self.active_status


def load_object(spec: str, **kwargs: Any) -> Any:
    """Build ``module:attribute`` with ``kwargs`` (a class or a factory)."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"adapter {spec!r} must be given as module:attribute")
    obj = getattr(importlib.import_module(module_name), attr)
    return obj(**kwargs)
