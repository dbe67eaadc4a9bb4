"""Flask integration of the OP side (the only OP package that imports Flask)."""

from .extension import OIDCLogout

__all__ = ["OIDCLogout"]
