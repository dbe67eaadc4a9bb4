"""Durable delivery of back-channel logout notifications (the outbox, its retry policy, the
embedded dispatcher and the standalone worker).

Import the submodules directly (``oidc_logout.delivery.dispatcher`` etc.); this package
module stays import-light.
"""

__all__: list[str] = []
