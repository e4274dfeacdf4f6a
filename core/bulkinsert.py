"""Insert many new model rows with PostgreSQL COPY: the fast path of `bulk_create` for plain rows.

Django's bulk_create prepares every value through the field machinery and psycopg then quotes each
one into a multi-row INSERT's text: at a fleet's first poll (tens of thousands of deployments and
audit events) that is most of the cycle's CPU. COPY streams the rows instead (psycopg's C dumpers),
into a temporary table, moved with one INSERT … SELECT; the primary keys are taken from the table's
sequence first, in one query, so every instance has its pk afterwards, as bulk_create gives it on
PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.db import connection, models, transaction

# Below this many rows one multi-row INSERT is cheaper than the COPY's four statements.
COPY_MIN_ROWS = 100


def models_copy_insert(objs: Sequence[models.Model]) -> None:
    """Insert these unsaved instances of one model, setting their pks; like bulk_create, no signals.

    Plain rows only: auto_now / auto_now_add fields are filled as Django would, JSON fields are
    encoded with the field's encoder, foreign keys are taken from their id attributes (or the
    assigned, saved object). Fewer than COPY_MIN_ROWS rows, or another database: bulk_create.
    """
    if not objs:
        return
    model = type(objs[0])
    if connection.vendor != "postgresql" or len(objs) < COPY_MIN_ROWS:
        model._default_manager.bulk_create(list(objs), batch_size=1000)
        return
    meta = model._meta
    pk = meta.pk
    assert pk is not None
    fields = [f for f in meta.local_concrete_fields if f.column is not None]
    need_pks = [obj for obj in objs if obj.pk is None]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    temp = quote(f"_copy_{meta.db_table}")
    columns = ", ".join(quote(str(f.column)) for f in fields)
    convert = [_converter(f) for f in fields]
    # The rows are COPied into a temporary table and moved with one INSERT … SELECT: the write to
    # the real table is an ordinary statement (its triggers, constraints and rowcount as usual).
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if need_pks:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                [table, pk.column, len(need_pks)],
            )
            for obj, (value,) in zip(need_pks, cursor.fetchall(), strict=True):
                setattr(obj, pk.attname, value)
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {temp} ON COMMIT DROP AS SELECT {columns} FROM {table} WITH NO DATA"  # noqa: S608 - quoted model metadata
        )
        with cursor.cursor.copy(f"COPY {temp} ({columns}) FROM STDIN") as copy:
            for obj in objs:
                copy.write_row([conv(obj) for conv in convert])
        cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {temp}")  # noqa: S608
        cursor.execute(f"TRUNCATE {temp}")
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias


def _converter(field: Any) -> Any:
    attname = field.attname
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return lambda obj: field.pre_save(obj, True)
    if isinstance(field, models.JSONField):
        encoder = field.encoder

        def as_json(obj: Any) -> Any:
            value = getattr(obj, attname)
            return None if value is None else json.dumps(value, cls=encoder)

        return as_json
    if field.is_relation and field.many_to_one:

        def foreign_key(obj: Any) -> Any:
            value = getattr(obj, attname)
            if value is None and field.is_cached(obj):
                related = field.get_cached_value(obj)
                if related is not None:
                    if related.pk is None:
                        raise ValueError(f"{field.name}: the related object is not saved")
                    value = related.pk
                    setattr(obj, attname, value)
            return value

        return foreign_key
    return lambda obj: getattr(obj, attname)
