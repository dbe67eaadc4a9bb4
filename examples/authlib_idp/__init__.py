"""An ordinary OpenID Connect provider built with Authlib + Flask, as Authlib's Flask guides
build one: see README.md next to this file."""

from .app import create_app, seed

__all__ = ["create_app", "seed"]
