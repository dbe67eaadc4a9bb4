"""OpenID Connect RP-Initiated Logout 1.0 on Authlib's EndSessionEndpoint.

https://openid.net/specs/openid-connect-rpinitiated-1_0.html
"""

__all__: list[str] = []
