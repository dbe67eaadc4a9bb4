"""oidc-logout: session termination that reaches every token and every relying party.

This top-level module must import with the standard library only: Python runs it before
``oidc_logout.rp``, which relying parties install with jwcrypto and requests alone.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
