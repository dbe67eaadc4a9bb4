"""``python -m oidc_logout_conformance``: the same as the ``oidc-logout-conformance`` command."""

from .runner import main

raise SystemExit(main())
