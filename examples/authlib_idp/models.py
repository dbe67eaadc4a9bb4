"""Database models, built on Authlib's SQLAlchemy mixins the way its Flask guide does.

The four tables the guide names (``user``, ``oauth2_client``, ``oauth2_code``,
``oauth2_token``) plus one of ours, ``oauth2_signing_key``, which keeps the RSA key that
signs ID tokens so that tokens issued before a restart still verify after it.
"""

from __future__ import annotations

import time
from typing import Any

from authlib.integrations.sqla_oauth2 import (
    OAuth2AuthorizationCodeMixin,
    OAuth2ClientMixin,
    OAuth2TokenMixin,
)
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

#: How long an authorization code can be exchanged (RFC 6749 §4.1.2 recommends at most 10 minutes).
CODE_LIFETIME = 300


def _now() -> int:
    return int(time.time())


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(40), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(255))

    def __str__(self) -> str:
        return self.username

    def get_user_id(self) -> int:
        return self.id

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class OAuth2Client(db.Model, OAuth2ClientMixin):  # type: ignore[name-defined,misc]
    __tablename__ = "oauth2_client"
    # The mixin indexes client_id but does not make it unique; every lookup here is by client_id.
    __table_args__ = (UniqueConstraint("client_id", name="uq_oauth2_client_client_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The user who created the client, as in Authlib's guide; NULL for clients created by
    #: RFC 7591 registration or loaded from the deployment's clients file.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    user: Mapped[User | None] = relationship()


class OAuth2AuthorizationCode(db.Model, OAuth2AuthorizationCodeMixin):  # type: ignore[name-defined,misc]
    """The mixin already has ``nonce``, ``auth_time``, ``acr``, ``amr`` and the PKCE columns."""

    __tablename__ = "oauth2_code"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    user: Mapped[User] = relationship()
    #: When the code was issued. The mixin measures a code's age from ``auth_time``, which is
    #: the time the user signed in (it ends up in the ID token); the two differ as soon as a
    #: signed-in user authorizes a second client, so expiry uses this column instead.
    issued_at: Mapped[int] = mapped_column(Integer, default=_now)

    def is_expired(self) -> bool:
        return self.issued_at + CODE_LIFETIME < time.time()


class OAuth2Token(db.Model, OAuth2TokenMixin):  # type: ignore[name-defined,misc]
    __tablename__ = "oauth2_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: NULL for client_credentials tokens.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    user: Mapped[User | None] = relationship()

    def is_refresh_token_active(self) -> bool:
        return bool(self.refresh_token) and not self.refresh_token_revoked_at

    def get_client(self) -> OAuth2Client | None:
        return db.session.scalar(db.select(OAuth2Client).filter_by(client_id=self.client_id))

    def get_user(self) -> User | None:
        return self.user


class SigningKey(db.Model):  # type: ignore[name-defined,misc]
    """A private JWK (JSON). The oldest key signs; every stored key is published in the JWKS."""

    __tablename__ = "oauth2_signing_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    kid: Mapped[str] = mapped_column(String(100), unique=True)
    private_jwk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(Integer, default=_now)


def ensure_user(username: str, password: str, **profile: Any) -> User:
    """Create the user if it does not exist yet (an existing user's password is left alone)."""
    user = db.session.scalar(db.select(User).filter_by(username=username))
    if user is None:
        user = User(username=username, **profile)
        user.set_password(password)
        db.session.add(user)
        db.session.commit()
    return user
