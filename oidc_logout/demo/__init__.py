"""The demo IdP (users alice and bob) and its sample relying parties."""

__all__: list[str] = []
