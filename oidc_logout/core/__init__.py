"""OpenID Connect Core 1.0 and OAuth 2.0 grants, on Authlib (sid in ID tokens, hashed tokens,
refresh token rotation with reuse detection, session participation)."""

__all__: list[str] = []
