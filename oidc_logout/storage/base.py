"""Declarative base, naming convention and the one place time and JSON are mapped."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any

from sqlalchemy import JSON, BigInteger, DateTime, Enum, Integer, MetaData, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, mapped_column

#: Named constraints so that Alembic can alter them later.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores UTC and always hands back timezone-aware datetimes.

    SQLite returns naive datetimes even for ``DateTime(timezone=True)``; deciding this once here
    keeps every comparison in the code aware.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


intpk = Annotated[int, mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)]
str40 = Annotated[str, mapped_column(String(40))]
str64 = Annotated[str, mapped_column(String(64))]
str255 = Annotated[str, mapped_column(String(255))]
text = Annotated[str, mapped_column(String(2048))]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
        # The vocabulary (oidc_logout.vocabulary): stored as the members' values in the
        # VARCHAR(40) columns the schema always had (no database enum type, no CHECK), so a
        # member compares equal to its stored text in raw SQL too.
        enum.Enum: Enum(
            enum.Enum,
            native_enum=False,
            create_constraint=False,
            length=40,
            values_callable=lambda members: [m.value for m in members],
        ),
    }


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


__all__ = ["NAMING_CONVENTION", "Base", "UTCDateTime", "utcnow"]
