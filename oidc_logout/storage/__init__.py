"""Storage layer: the OP's typed SQLAlchemy 2 models, their Alembic history and the small
queries several modules share.

Functions here take a :class:`sqlalchemy.orm.Session` and never commit: the caller owns the
transaction (SQLAlchemy's own advice, and what makes termination one transaction).
"""

__all__: list[str] = []
