"""Storage layer: the only package of the OP core that imports SQLAlchemy.

Functions here take a :class:`sqlalchemy.orm.Session` and never commit: the caller owns the
transaction (SQLAlchemy's own advice, and what makes termination one transaction).
"""
