"""The database's SQL functions are exactly what the function files say:
installed after migrate (config/sqlfunctions.py), never by a migration."""

from __future__ import annotations

from django.db import connection

from config import sqlfunctions


def test_the_databases_functions_equal_the_files(db):
    assert sqlfunctions.function_files(), "no function files found"
    assert sqlfunctions.differences() == []


def test_a_changed_or_stale_function_is_found_and_install_repairs_it(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE OR REPLACE FUNCTION tollgate_iso(p_at timestamptz) RETURNS text "
            "LANGUAGE sql IMMUTABLE AS $$ SELECT 'changed' $$"
        )
        cursor.execute(
            "CREATE FUNCTION tollgate_left_over() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$"
        )
    assert sqlfunctions.differences() == [
        "tollgate_left_over(): in no file",
        "tollgate_iso(p_at timestamp with time zone): differs from its file",
    ]

    assert sqlfunctions.install() == ["tollgate_left_over()"]
    assert sqlfunctions.differences() == []
