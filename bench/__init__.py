"""Benchmarks of oidc_logout (run with ``make bench`` or ``python -m bench.run_all``)."""
