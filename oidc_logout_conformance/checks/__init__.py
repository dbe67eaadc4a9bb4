"""Check implementations, one module per specification area (op_* for the OP profile,
rp_* for the RP profile). Every check cites its spec section; the catalogue is in
:mod:`oidc_logout_conformance.catalog`."""
