"""Pluggable adapters.

* :class:`LoginAdapter` (op profile): authenticates the End-User at the OP when an
  authorization request lands on a login page. Built in: :class:`FormLoginAdapter`.
* :class:`InteractionAdapter` (op profile, optional): handles any other OP page (consent,
  interstitials, logout confirmation) the built-in walker cannot.
* :class:`SessionAdapter` (rp profile): establishes an RP session for a given (sub, sid)
  and tells whether it is still active. Built in: :class:`LoginSessionAdapter` (signs in
  through the runner's OP and watches a protected URL, as a user would: no test hook in the
  RP) and :class:`HttpSessionAdapter` (an RP test hook that creates a session directly).

Third-party adapters are named ``module:attribute`` on the command line and built with the
``--adapter-arg key=value`` options as keyword arguments.
"""

from __future__ import annotations

import importlib
import re
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

    def is_active(self, handle: Any) -> bool:
        """Whether the session still lives. Raise when the RP's answer says neither (an
        error page): the check is then not decided on it."""
        ...


class SessionUnknown(RuntimeError):
    """The RP's answer tells neither "logged in" nor "logged out"."""


# -- HTML forms ---------------------------------------------------------------------------
@dataclass
class Control:
    """A submit control: a ``<button>`` (type submit by default) or ``<input type=submit>``."""

    name: str
    value: str
    text: str = ""


@dataclass
class Form:
    action: str
    method: str
    id: str = ""
    inputs: list[tuple[str, str, str]] = field(default_factory=list)  # (name, type, value)
    #: submit controls, inside the form or outside it naming it with form="<id>"
    buttons: list[Control] = field(default_factory=list)

    def field_names(self) -> set[str]:
        return {n for n, _, _ in self.inputs}

    @property
    def has_password(self) -> bool:
        return any(t == "password" for _, t, _ in self.inputs)

    @property
    def only_hidden(self) -> bool:
        return all(t == "hidden" for _, t, _ in self.inputs)


_SUBMIT_TYPES = ("submit", "image")


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._current: Form | None = None
        self._button: tuple[Control, str | None] | None = None  # open <button>, its form= attribute
        self._orphans: list[tuple[str, Control | tuple[str, str, str]]] = []  # (form id, control)
        self._in_script = False
        self.scripts: list[str] = []
        self.iframes: list[dict[str, str]] = []
        self.links: list[dict[str, str]] = []
        self.metas: list[dict[str, str]] = []

    def _attach(self, form_attr: str | None, item: Control | tuple[str, str, str]) -> None:
        # HTML: a form-associated element's form="" attribute wins over its ancestor form.
        if form_attr:
            self._orphans.append((form_attr, item))
        elif self._current is not None:
            if isinstance(item, Control):
                self._current.buttons.append(item)
            else:
                self._current.inputs.append(item)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._current = Form(a.get("action", ""), a.get("method", "get").lower(), a.get("id", ""))
            self.forms.append(self._current)
        elif tag == "button":
            if a.get("type", "submit").lower() == "submit":
                self._button = (Control(a.get("name", ""), a.get("value", "")), a.get("form"))
        elif tag in ("input", "select", "textarea"):
            typ = a.get("type", "text").lower() if tag == "input" else tag
            if typ in _SUBMIT_TYPES:
                self._attach(
                    a.get("form"), Control(a.get("name", ""), a.get("value", ""), a.get("value", ""))
                )
            elif a.get("name"):
                if typ in ("checkbox", "radio") and "checked" not in a:
                    return
                self._attach(
                    a.get("form"), (a["name"], typ, a.get("value", "on" if typ == "checkbox" else ""))
                )
        elif tag == "script":
            self._in_script = True
            self.scripts.append("")
        elif tag == "iframe":
            self.iframes.append(a)
        elif tag == "a":
            self.links.append(a)
        elif tag == "meta":
            self.metas.append(a)

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button[0].text += data
        if self._in_script and self.scripts:
            self.scripts[-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None
        elif tag == "button" and self._button is not None:
            control, form_attr = self._button
            control.text = " ".join(control.text.split())
            self._button = None
            self._attach(form_attr, control)
        elif tag == "script":
            self._in_script = False

    def close(self) -> None:
        super().close()
        by_id = {f.id: f for f in self.forms if f.id}
        for form_id, item in self._orphans:
            form = by_id.get(form_id)
            if form is None:
                continue
            if isinstance(item, Control):
                form.buttons.append(item)
            else:
                form.inputs.append(item)


def parse_html(text: str) -> _FormParser:
    p = _FormParser()
    p.feed(text)
    p.close()
    return p


# -- pages that move on by themselves -------------------------------------------------------
_SCRIPT_REDIRECT = re.compile(
    r"""(?:window\.|document\.|self\.|top\.)?location(?:\.href)?\s*=\s*(['"])(?P<a>[^'"]+)\1"""
    r"""|location\.(?:replace|assign)\(\s*(['"])(?P<b>[^'"]+)\3\s*\)"""
)
_SCRIPT_SUBMIT = re.compile(r"""\.submit\(\s*\)""")


def meta_refresh(parsed: _FormParser, base: str) -> str | None:
    for meta in parsed.metas:
        content = meta.get("content", "")
        if meta.get("http-equiv", "").lower() == "refresh" and "url=" in content.lower():
            url = content[content.lower().index("url=") + 4 :].strip().strip("'\"")
            return urljoin(base, url)
    return None


def script_redirect(parsed: _FormParser, base: str) -> str | None:
    """The target of a simple script redirect (``location = '...'``, ``location.href = ...``,
    ``location.replace('...')``); script that computes its target is not run."""
    for script in parsed.scripts:
        m = _SCRIPT_REDIRECT.search(script)
        if m:
            return urljoin(base, str(m.group("a") or m.group("b")))
    return None


def auto_submits(parsed: _FormParser) -> bool:
    """A page whose script submits its (only) form on load, e.g. response_mode=form_post."""
    return any(_SCRIPT_SUBMIT.search(s) for s in parsed.scripts) and len(parsed.forms) == 1


# -- interaction with the OP's pages -----------------------------------------------------------
#: Button names, values or labels that decline, cancel or go back: never pressed unless hinted.
DECLINE = re.compile(r"\b(no|deny|decline|cancel|abort|reject|back|stay|not now|other account)\b", re.I)


@dataclass
class Hints:
    """Per-step hints from the command line: ``fields`` are set on any form that has (or
    could take) them (``--field name=value``); ``submit`` names the buttons to prefer, as
    ``name`` or ``name=value`` (``--submit``)."""

    fields: dict[str, str] = field(default_factory=dict)
    submit: list[str] = field(default_factory=list)


def choose_button(form: Form, hints: Hints) -> Control | None:
    for wanted in hints.submit:
        name, sep, value = wanted.partition("=")
        for b in form.buttons:
            if b.name == name and (not sep or b.value == value):
                return b
    for b in form.buttons:
        if not DECLINE.search(" ".join((b.name, b.value, b.text))):
            return b
    return None


def form_data(form: Form, hints: Hints, button: Control | None) -> dict[str, str]:
    data: dict[str, str] = {}
    for name, _typ, value in form.inputs:
        data[name] = value
    for name, value in hints.fields.items():
        if name in data or not form.inputs or name in {b.name for b in form.buttons}:
            data[name] = value
    if button is not None and button.name:
        data[button.name] = button.value
    return data


def submit(
    browser: requests.Session, page: requests.Response, form: Form, data: dict[str, str]
) -> requests.Response:
    from .net import check_target

    url = urljoin(page.url, form.action or page.url)
    check_target(url, allow_remote=getattr(browser, "allow_remote", False))
    if form.method == "post":
        return browser.post(url, data=data, allow_redirects=False, timeout=15)
    return browser.get(url, params=data, allow_redirects=False, timeout=15)


@runtime_checkable
class InteractionAdapter(Protocol):
    """Plugin API for OPs with unusual interaction pages. ``interact`` is called for every
    HTML page the End-User's user agent reaches while the runner walks an authorization
    request (``purpose`` "authorize") or a logout it wants confirmed ("logout"). Return the
    OP's response to what you submitted (redirects NOT followed), or ``None`` to let the
    built-in walker handle the page (forms, consent, meta refresh, script redirects)."""

    def interact(
        self, browser: requests.Session, page: requests.Response, purpose: str
    ) -> requests.Response | None: ...


class FormLoginAdapter:
    """The built-in interaction adapter. On a page with a password field it logs in: every
    hidden input (CSRF tokens, ``next`` ...) is kept, the username goes into
    ``username_field`` (or, if the form has no such field, its first text/email input) and
    the password into ``password_field`` (or the first password input). Every other page
    (consent, interstitials, logout confirmation) is left to the walker, which submits the
    first form's first button that does not decline, with the ``hints`` applied."""

    def __init__(
        self,
        username: str,
        password: str,
        username_field: str = "username",
        password_field: str = "password",
        hints: Hints | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.username_field = username_field
        self.password_field = password_field
        self.hints = hints or Hints()

    def login(self, browser: requests.Session, page: requests.Response) -> requests.Response:
        parsed = parse_html(page.text)
        forms = [f for f in parsed.forms if f.has_password]
        if not forms:
            raise RuntimeError(f"no login form with a password field at {page.url}")
        form = forms[0]
        names = form.field_names()
        user_field = self.username_field
        if user_field not in names:
            user_field = next(
                (n for n, t, _ in form.inputs if t in ("text", "email") and n not in self.hints.fields),
                user_field,
            )
        pass_field = self.password_field
        if pass_field not in names:
            pass_field = next((n for n, t, _ in form.inputs if t == "password"), pass_field)
        button = choose_button(form, self.hints)
        data = form_data(form, self.hints, button)
        data[user_field] = self.username
        data[pass_field] = self.password
        return submit(browser, page, form, data)


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


class LoginSessionAdapter:
    """Observes the RP the way a user would, with no test hook in the RP: a fresh cookie-keeping
    user agent per session GETs ``login_url`` (default: the protected ``check_url``), follows
    the redirects to the runner's OP, whose ``/authorize`` approves the End-User at once, and
    back to the RP's callback (a ``response_mode=form_post`` page is submitted as its script
    would). The End-User is the OP session :meth:`RunnerOP.open_session` opened for the
    check's ``sub`` and ``sid`` (its cookie is put in the user agent's jar), so the ID token
    the RP receives carries them. Logged in: ``check_url`` answers ``active_status``; logged
    out: it redirects (to a login page or the OP) or answers 401/403; anything else is
    neither (:class:`SessionUnknown`). The run binds the adapter to its OP (:meth:`bind_op`)."""

    max_steps = 12

    def __init__(
        self,
        check_url: str,
        login_url: str | None = None,
        active_status: int = 200,
        allow_remote: bool = False,
    ) -> None:
        self.check_url = check_url
        self.login_url = login_url or check_url
        self.active_status = int(active_status)
        self.allow_remote = allow_remote
        self.op: Any = None  # rp_op.RunnerOP (not imported: adapters stay free of the OP)

    def bind_op(self, op: Any) -> None:
        self.op = op

    def _get(self, browser: requests.Session, url: str) -> requests.Response:
        from .net import check_target

        check_target(url, self.allow_remote)
        return browser.get(url, allow_redirects=False, timeout=15)

    def establish(self, sub: str, sid: str | None) -> requests.Session:
        from urllib.parse import urlsplit

        from .rp_op import SESSION_COOKIE

        if self.op is None:
            raise RuntimeError("the login session adapter is not bound to the runner's OP")
        browser = requests.Session()
        setattr(browser, "allow_remote", self.allow_remote)  # noqa: B010 - read by submit
        host = urlsplit(self.op.issuer).hostname or ""
        browser.cookies.set(SESSION_COOKIE, self.op.open_session(sub, sid), domain=host, path="/")
        trail: list[str] = []
        resp = self._get(browser, self.login_url)
        for _ in range(self.max_steps):
            trail.append(f"{resp.status_code} {resp.url.split('?')[0]}")
            if resp.is_redirect:
                location = urljoin(resp.url, resp.headers["Location"])
                if "#" in location and "=" in location.split("#", 1)[1]:
                    raise RuntimeError(
                        "the OP answered in the fragment (response_mode=fragment): the RP's script "
                        "would have to read it; configure query or form_post"
                    )
                resp = self._get(browser, location)
                continue
            parsed = parse_html(resp.text) if "html" in resp.headers.get("Content-Type", "") else None
            if resp.status_code == 200 and parsed is not None and auto_submits(parsed):
                form = parsed.forms[0]
                resp = submit(browser, resp, form, form_data(form, Hints(), None))
                continue
            break
        if not self.is_active(browser):
            raise RuntimeError(f"not logged in after the sign-in ({' -> '.join(trail)})")
        return browser

    def is_active(self, handle: requests.Session) -> bool:
        resp = self._get(handle, self.check_url)
        if resp.status_code == self.active_status:
            return True
        if resp.is_redirect or resp.status_code in (401, 403):
            return False
        raise SessionUnknown(
            f"{self.check_url} answered {resp.status_code}: neither logged in nor sent to log in"
        )


def load_object(spec: str, **kwargs: Any) -> Any:
    """Build ``module:attribute`` with ``kwargs`` (a class or a factory)."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"adapter {spec!r} must be given as module:attribute")
    obj = getattr(importlib.import_module(module_name), attr)
    return obj(**kwargs)
