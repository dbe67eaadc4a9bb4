"""OpenID Connect Back-Channel Logout 1.0, OP side.

https://openid.net/specs/openid-connect-backchannel-1_0.html
"""

__all__: list[str] = []
