"""OpenID Connect Front-Channel Logout 1.0, OP side (best effort: it lives in the browser).

https://openid.net/specs/openid-connect-frontchannel-1_0.html
"""

__all__: list[str] = []
