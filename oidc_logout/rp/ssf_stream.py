"""A thin SSF stream-management client: transmitter metadata, create/read a stream, verify it.

SSF 1.0 §7 (Transmitter Configuration Metadata, fetched from
``/.well-known/ssf-configuration`` inserted into the issuer), §8.1.1 (stream configuration),
§8.1.2 (status) and §8.1.4.2 (triggering verification), authorised with a bearer token, e.g.
one from :func:`client_credentials_token` (RFC 6749 §4.4; CAEP Interoperability Profile §2.7
names the scopes ``ssf.manage`` and ``ssf.read``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from ._http import HTTPLimits, check_url, get_json, read_capped
from .discovery import metadata_str, metadata_str_list
from .errors import OutboundHTTPError
from .ssf_receiver import SSFReceiver

__all__ = [
    "POLL_METHOD",
    "PUSH_METHOD",
    "StreamClient",
    "StreamConfig",
    "StreamError",
    "TransmitterMetadata",
    "client_credentials_token",
    "fetch_transmitter_metadata",
    "ssf_configuration_url",
]

#: SSF 1.0 §6.1.1 / §6.1.2 delivery method URIs.
PUSH_METHOD = "urn:ietf:rfc:8935"
POLL_METHOD = "urn:ietf:rfc:8936"


class StreamError(OutboundHTTPError):
    """The transmitter's metadata or stream-management answer was missing or not acceptable."""


def ssf_configuration_url(issuer: str) -> str:
    """SSF 1.0 §7.2: "/.well-known/ssf-configuration" inserted "between the host component and
    the path component", any terminating "/" of the issuer removed first."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, "/.well-known/ssf-configuration" + path, "", ""))


@dataclass(frozen=True)
class TransmitterMetadata:
    """Transmitter Configuration Metadata (SSF 1.0 §7.1); ``raw`` keeps every member."""

    issuer: str
    jwks_uri: str | None
    spec_version: str | None = None
    delivery_methods_supported: tuple[str, ...] = ()
    configuration_endpoint: str | None = None
    status_endpoint: str | None = None
    verification_endpoint: str | None = None
    add_subject_endpoint: str | None = None
    remove_subject_endpoint: str | None = None
    critical_subject_members: tuple[str, ...] = ()
    default_subjects: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], expected_issuer: str) -> TransmitterMetadata:
        # SSF 1.0 §7.2.4: "The issuer value returned MUST be identical to the Issuer URL that was
        # directly used to retrieve the configuration information"; information that fails to
        # validate "MUST NOT be used".
        if doc.get("issuer") != expected_issuer:
            raise StreamError(
                "issuer_mismatch", "ssf-configuration issuer differs from the configured issuer"
            )

        def opt_str(name: str) -> str | None:
            return metadata_str(doc, name)

        def str_list(name: str) -> tuple[str, ...]:
            return metadata_str_list(doc, name)

        return cls(
            issuer=expected_issuer,
            jwks_uri=opt_str("jwks_uri"),
            spec_version=opt_str("spec_version"),
            delivery_methods_supported=str_list("delivery_methods_supported"),
            configuration_endpoint=opt_str("configuration_endpoint"),
            status_endpoint=opt_str("status_endpoint"),
            verification_endpoint=opt_str("verification_endpoint"),
            add_subject_endpoint=opt_str("add_subject_endpoint"),
            remove_subject_endpoint=opt_str("remove_subject_endpoint"),
            critical_subject_members=str_list("critical_subject_members"),
            default_subjects=opt_str("default_subjects"),
            raw=dict(doc),
        )


def fetch_transmitter_metadata(
    issuer: str, *, session: requests.Session | None = None, limits: HTTPLimits = HTTPLimits()
) -> TransmitterMetadata:
    """GET the transmitter's configuration (SSF 1.0 §7.2.1) and validate its issuer."""
    check_url(issuer, "transmitter issuer", StreamError)
    doc, _ = get_json(session or requests.Session(), ssf_configuration_url(issuer), limits, StreamError)
    return TransmitterMetadata.from_document(doc, issuer)


def _json_call(
    http: requests.Session,
    method: str,
    url: str,
    limits: HTTPLimits,
    *,
    token: str | None = None,
    body: Any = None,
    form: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    check_url(url, "endpoint", StreamError)
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data: Any = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body)
    elif form is not None:
        data = dict(form)
    try:
        resp = http.request(
            method,
            url,
            data=data,
            params=params,
            headers=headers,
            auth=auth,
            timeout=limits.timeout,
            allow_redirects=False,
            stream=True,
        )
    except requests.RequestException as exc:
        raise StreamError("fetch_failed", f"request failed: {type(exc).__name__}") from None
    with resp:
        raw = read_capped(resp, limits, StreamError)
        status = resp.status_code
    if not raw:
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def client_credentials_token(
    token_endpoint: str,
    client_id: str,
    client_secret: str,
    scope: str = "ssf.manage ssf.read",
    *,
    session: requests.Session | None = None,
    limits: HTTPLimits = HTTPLimits(),
) -> str:
    """An access token by the client credentials grant (RFC 6749 §4.4, client_secret_basic)."""
    status, doc = _json_call(
        session or requests.Session(),
        "POST",
        token_endpoint,
        limits,
        form={"grant_type": "client_credentials", "scope": scope},
        auth=(client_id, client_secret),
    )
    token = doc.get("access_token") if isinstance(doc, dict) else None
    if status != 200 or not isinstance(token, str) or not token:
        raise StreamError("token_failed", f"token endpoint answered {status} without an access token")
    return token


@dataclass(frozen=True)
class StreamConfig:
    """A stream's configuration as the transmitter returned it (SSF 1.0 §8.1.1)."""

    stream_id: str
    iss: str
    aud: tuple[str, ...]
    delivery: Mapping[str, Any]
    events_delivered: tuple[str, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def method(self) -> str | None:
        m = self.delivery.get("method")
        return m if isinstance(m, str) else None

    @property
    def endpoint_url(self) -> str | None:
        u = self.delivery.get("endpoint_url")
        return u if isinstance(u, str) else None

    @classmethod
    def from_document(cls, doc: Any, metadata: TransmitterMetadata) -> StreamConfig:
        if not isinstance(doc, dict):
            raise StreamError("bad_json", "stream configuration is not a JSON object")
        stream_id = doc.get("stream_id")
        if not isinstance(stream_id, str) or not stream_id:
            raise StreamError("stream_id_missing", "stream configuration has no stream_id")
        # SSF 1.0 §8.1.1.1: "The Receiver MUST check the response and confirm that the iss value
        # matches the Issuer from which it received the Transmitter Configuration data."
        if doc.get("iss") != metadata.issuer:
            raise StreamError("issuer_mismatch", "stream iss differs from the transmitter's issuer")
        aud = doc.get("aud")
        auds = (
            (aud,)
            if isinstance(aud, str)
            else tuple(a for a in aud if isinstance(a, str))
            if isinstance(aud, list)
            else ()
        )
        if not auds:
            raise StreamError("aud_missing", "stream configuration has no aud")
        delivery = doc.get("delivery")
        if not isinstance(delivery, dict):
            raise StreamError("delivery_missing", "stream configuration has no delivery object")
        delivered = doc.get("events_delivered")
        events = tuple(e for e in delivered if isinstance(e, str)) if isinstance(delivered, list) else ()
        return cls(stream_id, metadata.issuer, auds, delivery, events, raw=dict(doc))


class StreamClient:
    """Manages this receiver's stream at one transmitter.

    :param token: a bearer access token for the management API, or a callable returning one.
    """

    def __init__(
        self,
        metadata: TransmitterMetadata,
        token: str | Callable[[], str],
        *,
        session: requests.Session | None = None,
        limits: HTTPLimits = HTTPLimits(),
    ) -> None:
        self.metadata = metadata
        self._token = token
        self.http = session or requests.Session()
        self.limits = limits

    def _bearer(self) -> str:
        return self._token() if callable(self._token) else self._token

    def _endpoint(self, name: str) -> str:
        url = getattr(self.metadata, name)
        if not url:
            raise StreamError("endpoint_missing", f"the transmitter publishes no {name}")
        return str(url)

    def create_stream(
        self,
        *,
        delivery: Mapping[str, Any] | None,
        events_requested: Iterable[str],
        description: str | None = None,
        expected_audience: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> StreamConfig:
        """POST to the configuration endpoint (SSF 1.0 §8.1.1.1; 201 Created expected).
        ``extra``: further members a transmitter understands (e.g. a subject format choice)."""
        body: dict[str, Any] = dict(extra or {})
        body["events_requested"] = list(events_requested)
        if delivery is not None:
            body["delivery"] = dict(delivery)
        if description:
            body["description"] = description
        status, doc = _json_call(
            self.http,
            "POST",
            self._endpoint("configuration_endpoint"),
            self.limits,
            token=self._bearer(),
            body=body,
        )
        if status not in (200, 201):
            raise StreamError("create_failed", f"creating the stream was answered {status}")
        config = StreamConfig.from_document(doc, self.metadata)
        # SSF 1.0 §8.1.1.1.1: "the Receiver SHOULD validate the aud in the Create Stream Response".
        if expected_audience is not None and expected_audience not in config.aud:
            raise StreamError("aud_mismatch", "the stream's aud does not name this receiver")
        return config

    def create_push_stream(
        self,
        endpoint_url: str,
        events_requested: Iterable[str],
        *,
        authorization_header: str | None = None,
        description: str | None = None,
        expected_audience: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> StreamConfig:
        """A push stream (RFC 8935) delivering to ``endpoint_url``, with the ``Authorization``
        value the transmitter must send (SSF 1.0 §6.1.1)."""
        delivery: dict[str, Any] = {"method": PUSH_METHOD, "endpoint_url": endpoint_url}
        if authorization_header is not None:
            delivery["authorization_header"] = authorization_header
        return self.create_stream(
            delivery=delivery,
            events_requested=events_requested,
            description=description,
            expected_audience=expected_audience,
            extra=extra,
        )

    def create_poll_stream(
        self,
        events_requested: Iterable[str],
        *,
        description: str | None = None,
        expected_audience: str | None = None,
    ) -> StreamConfig:
        """A poll stream (RFC 8936); the transmitter supplies its ``endpoint_url``."""
        config = self.create_stream(
            delivery={"method": POLL_METHOD},
            events_requested=events_requested,
            description=description,
            expected_audience=expected_audience,
        )
        if not config.endpoint_url:
            raise StreamError("endpoint_missing", "the poll stream has no endpoint_url")
        return config

    def get_stream(self, stream_id: str) -> StreamConfig:
        """GET the stream's configuration (SSF 1.0 §8.1.1.2)."""
        status, doc = _json_call(
            self.http,
            "GET",
            self._endpoint("configuration_endpoint"),
            self.limits,
            token=self._bearer(),
            params={"stream_id": stream_id},
        )
        if status != 200:
            raise StreamError("read_failed", f"reading the stream was answered {status}")
        return StreamConfig.from_document(doc, self.metadata)

    def get_status(self, stream_id: str) -> str:
        """The stream's status (SSF 1.0 §8.1.2.1): enabled, paused or disabled."""
        status, doc = _json_call(
            self.http,
            "GET",
            self._endpoint("status_endpoint"),
            self.limits,
            token=self._bearer(),
            params={"stream_id": stream_id},
        )
        value = doc.get("status") if isinstance(doc, dict) else None
        if status != 200 or not isinstance(value, str):
            raise StreamError("status_failed", f"reading the stream status was answered {status}")
        return value

    def request_verification(self, stream_id: str, receiver: SSFReceiver | None = None) -> str:
        """Ask for a verification event (SSF 1.0 §8.1.4.2, 204 expected) with a fresh ``state``;
        ``receiver`` is told to expect that state first. Returns the state."""
        state = secrets.token_urlsafe(16)
        if receiver is not None:
            receiver.expect_verification(state)
        status, _ = _json_call(
            self.http,
            "POST",
            self._endpoint("verification_endpoint"),
            self.limits,
            token=self._bearer(),
            body={"stream_id": stream_id, "state": state},
        )
        if status not in (200, 202, 204):
            raise StreamError("verification_failed", f"requesting verification was answered {status}")
        return state
