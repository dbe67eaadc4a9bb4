"""The ``op`` profile: test an OpenID Provider's logout behaviour end to end.

Flow (all HTTP is real; the runner's RP endpoints are a :class:`CaptureServer`):
discovery and JWKS -> register (or load) the clients -> revocation/introspection session ->
main session (one login, every client authorized) -> RP-initiated logout with
id_token_hint, post_logout_redirect_uri and state -> bounded wait for back-channel logout
requests -> token/session checks -> (with ``--browser``) a second session logged out in
Chromium, watching the front-channel iframes and the post-logout redirect arrive -> the
other RP-initiated logout variants (errors, no state, no id_token_hint, no parameters, only
state), each in a throwaway session.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from jwcrypto import jwk

from .adapters import LoginAdapter
from .checks import op_backchannel, op_discovery
from .checks.op_rpinitiated import (
    LogoutOutcome,
    confirmation_forms,
    foreign_hint,
    forge_hint,
    goes_to,
    page_redirect_targets,
    state_of,
)
from .model import Recorder, Status
from .net import check_target
from .opclient import Browser, FlowError, OPClient, OPConnection, Tokens
from .receivers import CaptureServer
from .redact import decode_jwt

FORM_HTML = b"<!doctype html><html><body>ok</body></html>"


@dataclass
class OPOptions:
    issuer: str
    login_adapter: LoginAdapter
    client_config: list[dict[str, Any]] | None = None
    clients: int = 2
    receiver_host: str = "127.0.0.1"
    receiver_port: int = 0
    wait: float = 10.0
    settle: float = 1.0
    allow_remote: bool = False
    scope: str = "openid"
    prompt: str = ""  # prompt for the main session's authorization requests (e.g. consent)
    token_scope: str = "openid offline_access"  # the RFC 7009/7662 session
    token_prompt: str = "consent"
    registration_token: str | None = None
    browser: str | None = None  # path of a Chromium executable: load the logged-out page for real


class OPRun:
    def __init__(self, opts: OPOptions, rec: Recorder) -> None:
        self.o = opts
        self.rec = rec
        self.red = rec.redactor
        self.issuer = (
            opts.issuer.rstrip("/") if opts.issuer.endswith("/") and len(opts.issuer) > 8 else opts.issuer
        )
        self.receiver = CaptureServer(
            opts.receiver_host,
            opts.receiver_port,
            responder=self._respond,
        )
        # back-channel path -> the tokens to introspect when its logout token arrives
        self._probe: dict[str, Tokens] = {}
        self._probe_results: dict[str, dict[str, Any]] = {}
        self.keyset: jwk.JWKSet | None = None
        self.op: OPConnection | None = None
        self.clients: list[OPClient] = []
        self.features: dict[str, bool] = {}
        self._shared: tuple[Browser, Tokens] | None = None
        self._current = "discovery"  # the core scenario running now

    @contextmanager
    def _scenario(self, name: str) -> Iterator[None]:
        """Run a core scenario: a FlowError inside marks it incomplete with the step and the
        reason, and propagates (the caller decides whether the run can go on)."""
        previous, self._current = self._current, name
        try:
            yield
        except FlowError as exc:
            self.rec.incomplete(name, exc.step or name, str(exc))
            exc.recorded = True
            raise
        finally:
            self._current = previous

    # -- helpers -------------------------------------------------------------------------
    def _respond(self, cap: Any) -> tuple[int, dict[str, str], bytes]:
        """The runner's RP endpoints answer 200. A logout token for a session whose tokens
        are being watched first has them introspected (BCL-2.7-revoked-before-notify): what
        an RP reacting to the token would find."""
        t = self._probe.get(cap.path) if cap.method == "POST" else None
        if (
            t is not None
            and cap.path not in self._probe_results
            and self.op is not None
            and self.features.get("introspection")
        ):
            self._probe_results[cap.path] = {"client_id": t.client.client_id}
            for kind, value in (("access_token", t.access_token), ("refresh_token", t.refresh_token)):
                if not value:
                    continue
                try:
                    r = self.op.post_form("introspection_endpoint", t.client, {"token": value}, timeout=5)
                    self._probe_results[cap.path][kind] = _json(r).get("active")
                except Exception as exc:  # never let the probe break the OP's delivery
                    self._probe_results[cap.path][kind] = f"introspection failed: {exc}"
        return 200, {"Content-Type": "text/html"}, FORM_HTML

    def _revoked_before_notify(self) -> None:
        if not self.features.get("introspection"):
            self.rec.skip("BCL-2.7-revoked-before-notify", "the OP advertises no introspection_endpoint")
            return
        if not self._probe_results:
            self.rec.skip("BCL-2.7-revoked-before-notify", "no logout token arrived")
            return
        warnings = [
            f"{r['client_id']}: its {kind} was still active when its logout token arrived"
            for r in self._probe_results.values()
            for kind in ("access_token", "refresh_token")
            if r.get(kind) is True
        ]
        self.rec.verdict(
            "BCL-2.7-revoked-before-notify",
            warnings=warnings,
            evidence={"at_delivery": list(self._probe_results.values())},
        )

    def log(self, msg: str) -> None:
        self.rec.log.append(msg)

    def _get_json(self, url: str) -> dict[str, Any]:
        check_target(url, self.o.allow_remote)
        resp = requests.get(url, timeout=15)
        resp.raise_for_status()
        body = resp.json()
        if not isinstance(body, dict):
            raise ValueError(f"{url} did not return a JSON object")
        return body

    def run(self) -> None:
        self.receiver.start()
        try:
            self._run()
        except FlowError as exc:
            self.log(f"flow stopped: {exc}")
            if not exc.recorded:
                self.rec.incomplete(self._current, exc.step or self._current, str(exc))
            self.rec.skip_rest(f"not reached: {exc}")
        finally:
            self.receiver.stop()

    # -- the run -------------------------------------------------------------------------
    def _run(self) -> None:
        issuer = self.o.issuer
        disc_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            doc = self._get_json(disc_url)
        except Exception as exc:
            self.rec.record(
                "DISC-4.3-issuer", Status.FAIL, f"discovery document unavailable: {exc}", {"url": disc_url}
            )
            self.rec.incomplete("discovery", "GET " + disc_url, f"discovery document unavailable: {exc}")
            self.rec.skip_rest("not reached: no discovery document")
            return
        self.features = op_discovery.check_discovery(self.rec, issuer, doc)
        try:
            self.keyset = jwk.JWKSet.from_json(json.dumps(self._get_json(doc["jwks_uri"])))
        except Exception as exc:
            self.log(f"JWKS unavailable: {exc}")
        self.op = OPConnection(
            issuer, doc, self.o.login_adapter, self.red, self.o.allow_remote, self.o.scope, self.o.prompt
        )
        self._setup_clients()
        if len(self.clients) < 2:
            raise FlowError("at least two clients are needed (one login at several RPs)", "clients")
        self.rec.complete("discovery")
        if self.features.get("revocation") or self.features.get("introspection"):
            try:
                with self._scenario("token-revocation"):
                    self._token_endpoints()
            except FlowError as exc:
                self.log(f"token endpoint checks stopped: {exc}")
                self.rec.skip_rest(f"not reached: {exc}", ("RFC7009-2", "RFC7662-2"))
        else:
            self.rec.not_applicable("token-revocation", "the OP advertises neither endpoint")
        if not self.features.get("end_session"):
            self.rec.not_applicable("backchannel", "no logout was possible")
            self._current = "logout"
            raise FlowError("the OP has no end_session_endpoint", "discovery: end_session_endpoint")
        self._main_logout()
        self._browser_frontchannel()
        self._negatives()

    def _setup_clients(self) -> None:
        assert self.op is not None
        base = self.receiver.base_url
        if self.o.client_config is not None:
            self.rec.skip("REG-7591-registration", "clients were configured (--client-config)")
            self.rec.skip("REG-BCL-2.2-fragment", "clients were configured (--client-config)")
            for configured in self.o.client_config:
                self.red.register(configured.get("client_secret"))
                self.clients.append(self._client_from(configured, configured))
            return
        if not self.op.endpoint("registration_endpoint"):
            self.rec.record(
                "REG-7591-registration",
                Status.FAIL,
                "no registration_endpoint: pass --client-config with pre-registered clients",
            )
            raise FlowError("no way to obtain clients")
        problems: list[str] = []
        evidence: list[dict[str, Any]] = []
        for i in range(self.o.clients):
            name = f"rp{i + 1}-{secrets.token_hex(3)}"
            meta: dict[str, Any] = {
                "client_name": f"conformance {name}",
                "redirect_uris": [f"{base}/{name}/callback"],
                "post_logout_redirect_uris": [f"{base}/{name}/logged-out"],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                # every scope the run asks for (the main session's and the RFC 7009/7662
                # session's): OPs limit a client to the scopes it registered
                "scope": " ".join(dict.fromkeys(f"{self.o.scope} {self._token_scope()}".split())),
                "token_endpoint_auth_method": "client_secret_basic",
                "id_token_signed_response_alg": "RS256",
                "backchannel_logout_uri": f"{base}/{name}/backchannel",
                "backchannel_logout_session_required": True,
            }
            if self.features.get("frontchannel"):
                meta["frontchannel_logout_uri"] = f"{base}/{name}/frontchannel"
                meta["frontchannel_logout_session_required"] = True
            headers: dict[str, str] = {}
            resp = (
                self.op.register(meta)
                if not self.o.registration_token
                else self.op.http.post(
                    self.op.endpoint("registration_endpoint") or "",
                    json=meta,
                    timeout=15,
                    headers={"Authorization": f"Bearer {self.o.registration_token}"},
                )
            )
            del headers
            try:
                body = resp.json()
            except ValueError:
                body = {}
            self.red.register(body.get("client_secret"), body.get("registration_access_token"))
            evidence.append({"request": meta, "status": resp.status_code, "response": body})
            if resp.status_code not in (200, 201) or not body.get("client_id"):
                problems.append(f"registration answered {resp.status_code}: {str(body)[:200]}")
                continue
            for key in ("backchannel_logout_uri", "frontchannel_logout_uri"):
                if key in meta and body.get(key) != meta[key]:
                    problems.append(f"{key} not echoed in the client information response")
            self.clients.append(self._client_from(body, meta))
        self.rec.verdict("REG-7591-registration", problems, evidence={"registrations": evidence})
        self._fragment_registration(meta)
        if problems and len(self.clients) < 2:
            raise FlowError("client registration failed")

    def _fragment_registration(self, meta: dict[str, Any]) -> None:
        """backchannel §2.2: the backchannel_logout_uri "MUST NOT include a fragment
        component"; RFC 7591 §3.2.2: invalid metadata is answered invalid_client_metadata."""
        assert self.op is not None
        bad = {
            **meta,
            "client_name": "conformance fragment",
            "backchannel_logout_uri": meta["backchannel_logout_uri"] + "#frag",
        }
        headers = (
            {"Authorization": f"Bearer {self.o.registration_token}"} if self.o.registration_token else {}
        )
        url = self.op.endpoint("registration_endpoint") or ""
        resp = self.op.http.post(url, json=bad, timeout=15, headers=headers)
        try:
            body = resp.json()
        except ValueError:
            body = {"_text": resp.text[:200]}
        if isinstance(body, dict):
            self.red.register(body.get("client_secret"), body.get("registration_access_token"))
        ev = {
            "request": {"backchannel_logout_uri": bad["backchannel_logout_uri"]},
            "status": resp.status_code,
            "response": body,
        }
        if 200 <= resp.status_code < 300:
            echoed = body.get("backchannel_logout_uri") if isinstance(body, dict) else None
            self.rec.verdict(
                "REG-BCL-2.2-fragment",
                [f"registration accepted it ({resp.status_code}; backchannel_logout_uri {echoed!r})"],
                evidence=ev,
            )
        else:
            self.rec.verdict("REG-BCL-2.2-fragment", evidence=ev)

    @staticmethod
    def _client_from(body: dict[str, Any], meta: dict[str, Any]) -> OPClient:
        merged = {**meta, **body}
        return OPClient(
            client_id=str(merged["client_id"]),
            client_secret=merged.get("client_secret"),
            metadata=merged,
            redirect_uri=merged["redirect_uris"][0],
            post_logout_redirect_uri=(merged.get("post_logout_redirect_uris") or [""])[0],
            backchannel_logout_uri=merged.get("backchannel_logout_uri"),
            frontchannel_logout_uri=merged.get("frontchannel_logout_uri"),
        )

    def _path(self, uri: str | None) -> str | None:
        return urlsplit(uri).path if uri else None

    # -- RFC 7009 / RFC 7662 (their own session) --------------------------------------------
    def _token_scope(self) -> str:
        """--token-scope; offline_access is dropped when the OP does not list it."""
        assert self.op is not None
        wanted = self.o.token_scope.split()
        supported = self.op.discovery.get("scopes_supported")
        if isinstance(supported, list):
            wanted = [s for s in wanted if s in supported or s == "openid"]
        return " ".join(wanted)

    def _token_endpoints(self) -> None:
        """Access and refresh tokens both (RFC 7009 §2: refresh tokens MUST, access tokens
        SHOULD be revocable). Refresh tokens are asked for with offline_access and
        prompt=consent (--token-scope, --token-prompt): Core §11 lets an OP issue them only
        then, as node oidc-provider does."""
        op = self.op
        assert op is not None
        a, b = self.clients[0], self.clients[1]
        scope, prompt = self._token_scope(), self.o.token_prompt
        t = op.login_and_authorize(Browser(op), a, prompt=prompt, scope=scope)
        at, rt = t.access_token, t.refresh_token
        if not at and not rt:
            raise FlowError("the token response has neither access_token nor refresh_token", "token response")
        no_rt = (
            f"the OP issued no refresh token (scope {scope!r}, prompt={prompt or 'none given'}, "
            "grant_types refresh_token registered)"
        )
        intro = self.features.get("introspection")
        revo = self.features.get("revocation")

        def active(resp: requests.Response) -> Any:
            try:
                return resp.json().get("active")
            except ValueError:
                return None

        def kinds() -> list[tuple[str, str]]:
            return [(k, v) for k, v in (("access_token", at), ("refresh_token", rt)) if v]

        if intro:
            resp = op.introspect(None, at or rt or "x")
            ev = {"status": resp.status_code, "body": resp.text[:300]}
            # RFC 7662 §2.1: the endpoint MUST require authorization; RFC 6749 §5.2: a failed
            # client authentication is answered 401 invalid_client.
            if resp.status_code == 401:
                self.rec.verdict("RFC7662-2.1-auth", evidence=ev)
            elif resp.status_code >= 400:
                self.rec.verdict(
                    "RFC7662-2.1-auth", warnings=[f"refused with {resp.status_code}, not 401"], evidence=ev
                )
            else:
                self.rec.verdict(
                    "RFC7662-2.1-auth",
                    [f"unauthenticated introspection answered {resp.status_code}"],
                    evidence=ev,
                )
            # RFC 7662 §2.2: active is true for a token that is currently active.
            failures, evs = [], {}
            for kind, value in kinds():
                resp = op.introspect(a, value)
                evs[kind] = {"status": resp.status_code, "body": _json(resp)}
                if resp.status_code != 200 or active(resp) is not True:
                    failures.append(f"a fresh {kind} answered {resp.status_code} active={active(resp)!r}")
            self.rec.verdict("RFC7662-2.2-active", failures, evidence=evs)
            self.rec.complete("token-revocation")
        if not revo:
            return
        resp = op.revoke(a, "unknown-" + secrets.token_urlsafe(24), "refresh_token")
        # RFC 7009 §2.2: "invalid tokens do not cause an error response".
        self.rec.verdict(
            "RFC7009-2.2-unknown-token",
            [] if resp.status_code == 200 else [f"answered {resp.status_code}"],
            evidence={"status": resp.status_code, "body": resp.text[:300]},
        )
        victim_kind, victim = ("refresh_token", rt) if rt else ("access_token", at or "")
        other = op.revoke(b, victim, victim_kind)
        if intro:
            still = active(op.introspect(a, victim))
            failures = (
                []
                if still is True
                else [
                    f"after {b.client_id} revoked {a.client_id}'s {victim_kind}, introspection active={still!r}"
                ]
            )
        elif rt:
            probe = op.refresh(a, rt)
            still = probe.status_code == 200
            if still:
                rt = (probe.json() or {}).get("refresh_token") or rt
                self.red.register(rt)
            failures = [] if still else ["the token stopped working after another client revoked it"]
        else:
            still, failures = None, []
        if still is None:
            self.rec.skip("RFC7009-2.1-other-client", "no introspection and no refresh token to probe with")
        else:
            # RFC 7009 §2.1: the server "first validates the client credentials ... and then
            # verifies whether the token was issued to the client making the revocation request".
            self.rec.verdict(
                "RFC7009-2.1-other-client",
                failures,
                evidence={
                    "token": victim_kind,
                    "revoke_by_other_client": {"status": other.status_code, "body": other.text[:300]},
                    "still_active": still,
                },
            )
        inactive: dict[str, Any] = {}
        # Access token first (RFC 7009 §2: SHOULD be supported). Revoking it may revoke the
        # grant and its refresh token too (RFC 7009 §2.1 allows it), so the refresh-token case
        # gets a session of its own below.
        if at:
            resp = op.revoke(a, at, "access_token")
            ev2: dict[str, Any] = {"revoke": {"status": resp.status_code, "body": resp.text[:300]}}
            failures = [] if resp.status_code == 200 else [f"revocation answered {resp.status_code}"]
            if intro:
                r = op.introspect(a, at)
                ev2["introspection_after"] = {"status": r.status_code, "body": _json(r)}
                inactive["access_token"] = (r.status_code, active(r))
                if active(r) is not False:
                    failures.append(
                        f"the revoked access token is still active (introspection active={active(r)!r})"
                    )
                self.rec.verdict("RFC7009-2.1-revoke-access", failures, evidence=ev2)
            elif failures:
                self.rec.verdict("RFC7009-2.1-revoke-access", failures, evidence=ev2)
            else:
                self.rec.skip(
                    "RFC7009-2.1-revoke-access",
                    "answered 200, but without introspection the effect is not observable",
                    ev2,
                )
            self.rec.complete("token-revocation")
        else:
            self.rec.skip("RFC7009-2.1-revoke-access", "the OP issued no access token")
        if not rt:
            self.rec.skip("RFC7009-2.1-revoke", no_rt)
        else:
            t2 = op.login_and_authorize(Browser(op), a, prompt=prompt, scope=scope)
            rt2 = t2.refresh_token
            if not rt2:
                self.rec.skip("RFC7009-2.1-revoke", no_rt + " in the second session")
            else:
                resp = op.revoke(a, rt2, "refresh_token")
                refresh = op.refresh(a, rt2)
                failures = []
                if resp.status_code != 200:
                    failures.append(f"revocation answered {resp.status_code}")
                if refresh.status_code == 200:
                    self.red.register(*(refresh.json() or {}).values())
                    failures.append("the revoked refresh token still refreshes")
                self.rec.verdict(
                    "RFC7009-2.1-revoke",
                    failures,
                    evidence={
                        "revoke": {"status": resp.status_code, "body": resp.text[:300]},
                        "refresh_after": {"status": refresh.status_code, "body": _json(refresh)},
                    },
                )
                if intro:
                    r = op.introspect(a, rt2)
                    inactive["refresh_token"] = (r.status_code, active(r))
                self.rec.complete("token-revocation")
        if intro and inactive:
            # RFC 7662 §2.2: a revoked token is not active.
            self.rec.verdict(
                "RFC7662-2.2-inactive",
                [
                    f"introspection of a revoked {kind} answered {st} active={act!r}"
                    for kind, (st, act) in inactive.items()
                    if st != 200 or act is not False
                ],
                evidence={k: {"status": st, "active": act} for k, (st, act) in inactive.items()},
            )

    # -- main session: one login, all clients, RP-initiated logout -------------------------
    def _end_session(
        self, browser: Browser, params: dict[str, str], confirm: bool, stop: tuple[str, ...]
    ) -> LogoutOutcome:
        assert self.op is not None
        url = self.op.endpoint("end_session_endpoint") or ""
        resp = browser.get(url, **params)
        final, redirect, hops, pages = browser.walk(
            resp, stop, login=False, confirm_url=url if confirm else None
        )
        return LogoutOutcome(hops, pages, final, redirect, page_redirect_targets(pages))

    def _session_alive(self, browser: Browser, client: OPClient) -> dict[str, Any]:
        """One client's view of the OP session: prompt=none gives a code (alive),
        login_required (ended) or anything else, reported as it is (unknown)."""
        assert self.op is not None
        res = self.op.authorize(browser, client, prompt="none")
        answer = "code issued" if "code" in res else res.get("error") or f"stopped: {res.get('stopped')}"
        return {
            "client_id": client.client_id,
            "alive": "code" in res,
            "ended": res.get("error") == "login_required",
            "result": answer,
        }

    def _session_state(self, browser: Browser, clients: list[OPClient]) -> list[dict[str, Any]]:
        """RP-Initiated §2 / Core §3.1.2.1: the session is over only when *every* client of it
        gets login_required with prompt=none; asking one client misses a partial logout."""
        return [self._session_alive(browser, c) for c in clients]

    def _main_logout(self) -> None:
        op = self.op
        assert op is not None
        browser = Browser(op)
        with self._scenario("login"):
            tokens = [op.login_and_authorize(browser, c) for c in self.clients]
            if not tokens[0].id_token:
                raise FlowError(
                    "the token response has no id_token", f"token response for {tokens[0].client.client_id}"
                )
        self.rec.complete("login")
        self._current = "logout"
        sids = [t.id_claims.get("sid") for t in tokens]
        ev_ids = [
            {"client_id": t.client.client_id, "id_token": {"header": t.id_header, "claims": t.id_claims}}
            for t in tokens
        ]
        if (
            self.rec.results.get("BCL-2.1-session-supported")
            and self.rec.results["BCL-2.1-session-supported"].status is Status.PASS
        ):
            self.rec.verdict(
                "BCL-2.1-id-token-sid",
                [
                    f"{t.client.client_id}: the ID token has no sid"
                    for t in tokens
                    if not t.id_claims.get("sid")
                ],
                # Different sids per client are not a failure: backchannel §2.1 and frontchannel §3 define sid as the session
                # identifier *at the RP*; an OP may give each client its own (node
                # oidc-provider's sidFor(clientId)). BCL-2.4-sid-match checks each client's.
                evidence={"id_tokens": ev_ids, "distinct_sids": len(set(map(str, sids)))},
            )
        else:
            self.rec.skip(
                "BCL-2.1-id-token-sid", "the OP does not advertise backchannel_logout_session_supported"
            )
        first = tokens[0]
        state = secrets.token_urlsafe(16)
        self._probe = {p: t for t in tokens if (p := self._path(t.client.backchannel_logout_uri)) is not None}
        mark = len(self.receiver.requests)
        started = time.monotonic()
        plru = first.client.post_logout_redirect_uri
        outcome = self._end_session(
            browser,
            {"id_token_hint": first.id_token or "", "post_logout_redirect_uri": plru, "state": state},
            confirm=True,
            stop=(plru,),
        )
        status = outcome.status()
        ok = outcome.redirect is not None or (status is not None and status < 400)
        self.rec.verdict(
            "RPI-2-logout",
            [] if ok else [f"end_session answered {status}"],
            evidence={
                "request": {
                    "id_token_hint": {"header": first.id_header, "claims": first.id_claims},
                    "post_logout_redirect_uri": plru,
                    "state": state,
                },
                **outcome.evidence(),
            },
        )
        targets = [u for u in outcome.targets() if goes_to(u, plru)]
        if not targets:
            self.rec.verdict(
                "RPI-3-state",
                [
                    "the OP did not redirect to the registered post_logout_redirect_uri "
                    "(no Location, meta refresh or link to it)"
                ],
                evidence=outcome.evidence(),
            )
        else:
            bad = [u for u in targets if state_of(u) != [state]]
            self.rec.verdict(
                "RPI-3-state",
                ["state was not echoed exactly once on the redirect"] if bad else [],
                evidence={"redirect_targets": targets, "state_sent": state},
            )
        self._frontchannel(outcome, tokens)
        # Back-channel: bounded wait for every client with a backchannel_logout_uri.
        expected = [t for t in tokens if t.client.backchannel_logout_uri]
        paths = {self._path(t.client.backchannel_logout_uri) for t in expected}

        def arrived(reqs: list[Any]) -> bool:
            got = {r.path for r in reqs[mark:]}
            return paths <= got

        self.receiver.wait_for(arrived, self.o.wait)
        time.sleep(self.o.settle)
        got = {r.path for r in self.receiver.requests[mark:]}
        if not expected:
            self.rec.not_applicable("backchannel", "no client has a backchannel_logout_uri")
        elif paths <= got:
            self.rec.complete("backchannel")
        else:
            late = [
                t.client.client_id for t in expected if self._path(t.client.backchannel_logout_uri) not in got
            ]
            self.rec.incomplete(
                "backchannel",
                "waiting for back-channel logout requests",
                f"no logout token arrived for {', '.join(late)} within {self.o.wait}s",
            )
        waited = time.monotonic() - started
        deliveries = []
        by_path = {self._path(c.backchannel_logout_uri): c for c in self.clients if c.backchannel_logout_uri}
        for r in self.receiver.requests[mark:]:
            client = by_path.get(r.path)
            if client is not None:
                deliveries.append(op_backchannel.parse_delivery(client, r))
        self._probe = {}
        op_backchannel.check_deliveries(
            self.rec, self.issuer, expected, deliveries, self.keyset, waited, session_sid_required=True
        )
        self._revoked_before_notify()
        answers = self._session_state(browser, self.clients)
        alive = [a for a in answers if a["alive"]]
        unknown = [a for a in answers if not a["alive"] and not a["ended"]]
        if alive:
            self.rec.verdict(
                "RPI-2-session-ended",
                [
                    f"{a['client_id']} still gets a code with prompt=none: the session is not over for it"
                    for a in alive
                ],
                evidence={"prompt_none": answers},
            )
            self.rec.complete("logout")
        elif unknown:
            # Not proof either way: consent_required, interaction_required, an error page ...
            why = "; ".join(f"{a['client_id']} answered {a['result']}" for a in unknown)
            self.rec.skip(
                "RPI-2-session-ended",
                f"could not tell whether the session ended (login_required expected): {why}",
                {"prompt_none": answers},
            )
            self.rec.incomplete("logout", "prompt=none after logout", why)
        else:
            self.rec.verdict("RPI-2-session-ended", evidence={"prompt_none": answers})
            self.rec.complete("logout")
        self._refresh_revoked(tokens)

    def _refresh_revoked(self, tokens: list[Tokens]) -> None:
        op = self.op
        assert op is not None
        failures: list[str] = []
        evidence: list[dict[str, Any]] = []
        with_rt = [t for t in tokens if t.refresh_token]
        if not with_rt:
            self.rec.skip("BCL-2.7-refresh-revoked", "the OP issued no refresh tokens")
            return
        for t in with_rt:
            item: dict[str, Any] = {"client_id": t.client.client_id}
            if self.features.get("introspection"):
                r = op.introspect(t.client, t.refresh_token or "")
                item["introspection"] = {"status": r.status_code, "body": _json(r)}
                if r.status_code == 200 and _json(r).get("active") is not False:
                    failures.append(f"{t.client.client_id}: introspection still says active")
            r = op.refresh(t.client, t.refresh_token or "")
            item["refresh"] = {"status": r.status_code, "body": _json(r)}
            if r.status_code == 200:
                self.red.register(*_json(r).values())
                failures.append(f"{t.client.client_id}: the refresh token still works after logout")
            evidence.append(item)
        self.rec.verdict(
            "BCL-2.7-refresh-revoked", failures, evidence={"tokens": evidence, "scope": self.o.scope}
        )

    def _frontchannel(self, outcome: LogoutOutcome, tokens: list[Tokens]) -> None:
        if not self.features.get("frontchannel"):
            return
        from .adapters import parse_html

        fc = [t for t in tokens if t.client.frontchannel_logout_uri]
        if not fc:
            for cid in ("FCL-4-iframes", "FCL-3-iss-sid"):
                self.rec.skip(cid, "no client has a frontchannel_logout_uri")
            return
        srcs: list[str] = []
        for page in outcome.pages:
            srcs.extend(f.get("src", "") for f in parse_html(page.text).iframes)
        missing, wrong, ev = [], [], []
        for t in fc:
            uri = t.client.frontchannel_logout_uri or ""
            mine = [s for s in srcs if goes_to(s, uri)]
            if not mine:
                missing.append(t.client.client_id)
                continue
            for s in mine:
                q = parse_qs(urlsplit(s).query)
                ev.append({"client_id": t.client.client_id, "iframe_src": s})
                if q.get("iss") != [self.issuer]:
                    wrong.append(f"{t.client.client_id}: iss parameter {q.get('iss')!r}")
                if q.get("sid") != [t.id_claims.get("sid")]:
                    wrong.append(
                        f"{t.client.client_id}: sid parameter {q.get('sid')!r} is not the ID token's sid"
                    )
        self.rec.verdict(
            "FCL-4-iframes",
            [f"no iframe for {', '.join(missing)} on the logged-out page"] if missing else [],
            evidence={"pages": len(outcome.pages), "iframes": srcs},
        )
        if len(missing) == len(fc):
            self.rec.skip("FCL-3-iss-sid", "no front-channel iframe was rendered")
        else:
            self.rec.verdict("FCL-3-iss-sid", wrong, evidence={"iframes": ev, "issuer": self.issuer})

    # -- the front-channel page in a real browser ---------------------------------------------
    def _browser_frontchannel(self) -> None:
        if "FCL-4-browser" in self.rec.results:
            return  # skipped by the discovery checks
        if not self.o.browser:
            self.rec.skip("FCL-4-browser", "no --browser given: the logged-out page was parsed, not loaded")
            return
        if not any(c.frontchannel_logout_uri for c in self.clients):
            self.rec.skip("FCL-4-browser", "no client has a frontchannel_logout_uri")
            return
        from .checks.op_browser import check_in_browser

        try:
            check_in_browser(self, self.o.browser)
        except FlowError as exc:
            self.rec.record("FCL-4-browser", Status.SKIPPED, f"could not set up a session: {exc}")

    # -- negative RP-initiated logout requests, each in a throwaway session ------------------
    def _request_ev(self, params: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in params.items():
            if k == "id_token_hint":
                dec = decode_jwt(v)
                out[k] = (
                    {"header": dec.get("header"), "claims": dec.get("claims"), "signature": "[REDACTED]"}
                    if isinstance(dec.get("claims"), dict)
                    else "[not a JWT]"
                )
            else:
                out[k] = v
        return out

    def _bc_hits(self, t: Tokens, mark: int) -> list[Any]:
        """Back-channel logout requests received since ``mark`` for the session of ``t``."""
        sid, sub = t.id_claims.get("sid"), t.id_claims.get("sub")
        paths = {self._path(c.backchannel_logout_uri) for c in self.clients if c.backchannel_logout_uri}
        hits = []
        for r in self.receiver.requests[mark:]:
            if r.method == "POST" and r.path in paths:
                claims = op_backchannel.parse_delivery(t.client, r).claims
                if (sid and claims.get("sid") == sid) or (not claims.get("sid") and claims.get("sub") == sub):
                    hits.append(r)
        return hits

    def _attempt(
        self,
        browser: Browser,
        t: Tokens,
        params: dict[str, str],
        uris: list[str],
        confirm: bool = False,
        extra_stop: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """One end_session request in ``t``'s session: where it led, whether it redirected to
        one of ``uris``, whether the session survived (prompt=none) and back-channel traffic."""
        mark = len(self.receiver.requests)
        outcome = self._end_session(
            browser,
            params,
            confirm=confirm,
            stop=tuple(c.post_logout_redirect_uri for c in self.clients) + extra_stop,
        )
        redirected = [u for u in outcome.targets() if any(goes_to(u, x) for x in uris)]
        alive = self._session_alive(browser, t.client)
        if alive["alive"]:
            time.sleep(min(self.o.settle, 0.5))  # a back-channel logout sent for a session kept alive
        else:
            self._shared = None  # the next request needs a fresh session
        hits = self._bc_hits(t, mark)
        ev = {
            "request": self._request_ev(params),
            **outcome.evidence(),
            "session_after": alive,
            "backchannel_requests_after": len(hits),
        }
        return {
            "outcome": outcome,
            "redirected": redirected,
            "alive": alive["alive"],
            "ended": alive["ended"],
            "answer": alive["result"],
            "hits": hits,
            "ev": ev,
        }

    def _session(self) -> tuple[Browser, Tokens]:
        """A session for requests that must leave it alive: shared between them (a login can
        be slow) until one of them ends it."""
        if self._shared is None:
            assert self.op is not None
            browser = Browser(self.op)
            self._shared = (browser, self.op.login_and_authorize(browser, self.clients[0]))
        return self._shared

    def _negative(self, check_id: str, make_params: Any, bad_uri: str | None, error_expected: bool) -> None:
        browser, t = self._session()
        variants = make_params(t)
        if isinstance(variants, dict):
            variants = [variants]
        failures: list[str] = []
        warnings: list[str] = []
        evs = []
        uris = [bad_uri] if bad_uri else [c.post_logout_redirect_uri for c in self.clients]
        for params in variants:
            r = self._attempt(browser, t, params, uris, extra_stop=(bad_uri,) if bad_uri else ())
            evs.append(r["ev"])
            if r["redirected"]:
                failures.append(f"the OP redirected to {r['redirected'][0]}")
            if error_expected:
                status = r["outcome"].status()
                if r["ended"]:
                    failures.append("the session was ended")
                elif not r["alive"]:
                    warnings.append(
                        f"afterwards prompt=none answered {r['answer']}: whether the session survived "
                        "is unknown"
                    )
                if r["hits"]:
                    failures.append("a back-channel logout was sent for the session")
                if status is not None and status < 400 and not r["redirected"]:
                    warnings.append(f"answered {status} instead of an error page")
            if failures or not r["alive"]:
                break
        self.rec.verdict(
            check_id, failures, warnings, evidence=evs[0] if len(evs) == 1 else {"requests": evs}
        )

    def _post_logout(self) -> None:
        """RP-Initiated §2: "The OP MUST support the use of the HTTP GET and POST methods"
        at the end_session endpoint (POST form-serialized, as OIDC Core §13.2)."""
        op = self.op
        assert op is not None
        a = self.clients[0]
        browser = Browser(op)
        t = op.login_and_authorize(browser, a)
        url = op.endpoint("end_session_endpoint") or ""
        params = {
            "id_token_hint": t.id_token or "",
            "post_logout_redirect_uri": a.post_logout_redirect_uri,
            "state": secrets.token_urlsafe(8),
        }
        resp = browser.http.post(url, data=params, allow_redirects=False, timeout=15)
        final, redirect, hops, pages = browser.walk(
            resp, (a.post_logout_redirect_uri,), login=False, confirm_url=url
        )
        outcome = LogoutOutcome(hops, pages, final, redirect, page_redirect_targets(pages))
        failures = []
        if resp.status_code in (404, 405, 501) or resp.status_code >= 500:
            failures.append(f"POST to end_session answered {resp.status_code}")
        elif not [u for u in outcome.targets() if goes_to(u, a.post_logout_redirect_uri)]:
            failures.append(
                f"the POSTed logout did not lead to the post_logout_redirect_uri (HTTP {outcome.status()})"
            )
        self.rec.verdict(
            "RPI-2-post",
            failures,
            evidence={"request": {"method": "POST", **self._request_ev(params)}, **outcome.evidence()},
        )

    def _no_state(self) -> None:
        """Registered post_logout_redirect_uri without state: redirected there, no state added."""
        op = self.op
        assert op is not None
        a = self.clients[0]
        browser = Browser(op)
        t = op.login_and_authorize(browser, a)
        params = {"id_token_hint": t.id_token or "", "post_logout_redirect_uri": a.post_logout_redirect_uri}
        outcome = self._end_session(browser, params, confirm=True, stop=(a.post_logout_redirect_uri,))
        targets = [u for u in outcome.targets() if goes_to(u, a.post_logout_redirect_uri)]
        failures = []
        if not targets:
            failures.append("the OP did not redirect to the registered post_logout_redirect_uri")
        elif any(state_of(u) for u in targets):
            failures.append("the redirect carries a state parameter although none was sent")
        self.rec.verdict(
            "RPI-3-no-state", failures, evidence={"request": self._request_ev(params), **outcome.evidence()}
        )

    def _without_hint(self, check_id: str, params: dict[str, str], redirect_is_failure: bool) -> None:
        """Requests without id_token_hint: the OP should ask the End-User (§6) and must not
        redirect to an RP on its own; nothing may be ended before the End-User confirms."""
        op = self.op
        assert op is not None
        browser, t = self._session()
        r = self._attempt(browser, t, params, [c.post_logout_redirect_uri for c in self.clients])
        outcome: LogoutOutcome = r["outcome"]
        failures: list[str] = []
        warnings: list[str] = []
        status = outcome.status()
        if r["redirected"]:
            (failures if redirect_is_failure else warnings).append(
                f"the OP redirected to {r['redirected'][0]} without id_token_hint or confirmation"
            )
        if status is not None and status >= 500:
            failures.append(f"end_session answered {status}")
        if r["ended"] or r["hits"]:
            warnings.append("the session was ended without asking the End-User (§6: obtain confirmation)")
        elif not r["alive"]:
            warnings.append(
                f"afterwards prompt=none answered {r['answer']}: whether the session survived is unknown"
            )
        url = op.endpoint("end_session_endpoint") or ""
        r["ev"]["confirmation_form"] = bool(confirmation_forms(outcome.pages, url))
        self.rec.verdict(check_id, failures, warnings, evidence=r["ev"])

    def _negatives(self) -> None:
        a, b = self.clients[0], self.clients[1]
        plru = a.post_logout_redirect_uri
        unregistered = f"{self.receiver.base_url}/not-registered/logged-out"
        modified = plru + ("&" if "?" in plru else "?") + "added=1"
        st = secrets.token_urlsafe(8)
        steps: list[tuple[str, Any]] = [
            (
                "RPI-3-unregistered-uri",
                lambda: self._negative(
                    "RPI-3-unregistered-uri",
                    lambda t: {
                        "id_token_hint": t.id_token,
                        "post_logout_redirect_uri": unregistered,
                        "state": st,
                    },
                    unregistered,
                    False,
                ),
            ),
            # Registered URI with an added query: any redirect to that path is a violation
            # (exact match, §3), with or without the added query.
            (
                "RPI-3-modified-uri",
                lambda: self._negative(
                    "RPI-3-modified-uri",
                    lambda t: {
                        "id_token_hint": t.id_token,
                        "post_logout_redirect_uri": modified,
                        "state": st,
                    },
                    plru,
                    False,
                ),
            ),
            (
                "RPI-2-forged-hint",
                lambda: self._negative(
                    "RPI-2-forged-hint",
                    lambda t: {
                        "id_token_hint": forge_hint(t.id_token),
                        "post_logout_redirect_uri": plru,
                        "state": st,
                    },
                    None,
                    True,
                ),
            ),
            (
                "RPI-2-client-id-mismatch",
                lambda: self._negative(
                    "RPI-2-client-id-mismatch",
                    lambda t: {
                        "id_token_hint": t.id_token,
                        "client_id": b.client_id,
                        "post_logout_redirect_uri": plru,
                        "state": st,
                    },
                    None,
                    True,
                ),
            ),
            (
                "RPI-2-bad-hint",
                lambda: self._negative(
                    "RPI-2-bad-hint",
                    lambda t: [
                        {
                            "id_token_hint": foreign_hint(t.id_claims),
                            "post_logout_redirect_uri": plru,
                            "state": st,
                        },
                        {
                            "id_token_hint": "not-a-jwt." + secrets.token_urlsafe(12),
                            "post_logout_redirect_uri": plru,
                            "state": st,
                        },
                    ],
                    None,
                    True,
                ),
            ),
            ("RPI-3-no-state", self._no_state),
            ("RPI-2-post", self._post_logout),
            (
                "RPI-6-no-id-token-hint",
                lambda: self._without_hint(
                    "RPI-6-no-id-token-hint",
                    {"client_id": a.client_id, "post_logout_redirect_uri": plru, "state": st},
                    redirect_is_failure=False,
                ),
            ),
            ("RPI-6-no-params", lambda: self._without_hint("RPI-6-no-params", {}, redirect_is_failure=True)),
            (
                "RPI-3-only-state",
                lambda: self._without_hint("RPI-3-only-state", {"state": st}, redirect_is_failure=True),
            ),
        ]
        for check_id, step in steps:
            try:
                step()
            except FlowError as exc:
                self.rec.record(check_id, Status.SKIPPED, f"could not set up a session: {exc}")


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
        return body if isinstance(body, dict) else {"_": body}
    except ValueError:
        return {"_text": resp.text[:200]}
