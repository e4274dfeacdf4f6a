"""core.env: typed environment reads; a bad value raises ImproperlyConfigured naming the variable."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from core.env import (
    check_redis_url,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    parse_database_url,
)


def test_env_str_reads_the_variable_then_the_file_then_the_default(monkeypatch, tmp_path):
    monkeypatch.delenv("GP_TEST_STR", raising=False)
    monkeypatch.delenv("GP_TEST_STR_FILE", raising=False)
    assert env_str("GP_TEST_STR", "fallback") == "fallback"
    monkeypatch.setenv("GP_TEST_STR", "direct")
    assert env_str("GP_TEST_STR") == "direct"
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.setenv("GP_TEST_STR_FILE", str(secret))
    assert env_str("GP_TEST_STR") == "from-file"
    monkeypatch.setenv("GP_TEST_STR_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="GP_TEST_STR_FILE: cannot read"):
        env_str("GP_TEST_STR")


@pytest.mark.parametrize(("raw", "expected"), [("yes", True), ("ON", True), ("0", False), ("", False)])
def test_env_bool_accepts_the_usual_words(monkeypatch, raw, expected):
    monkeypatch.setenv("GP_TEST_BOOL", raw)
    assert env_bool("GP_TEST_BOOL", not expected) is expected


def test_env_bool_refuses_other_words(monkeypatch):
    monkeypatch.setenv("GP_TEST_BOOL", "maybe")
    with pytest.raises(ImproperlyConfigured, match="GP_TEST_BOOL: expected true/false"):
        env_bool("GP_TEST_BOOL", False)


def test_env_int(monkeypatch):
    monkeypatch.delenv("GP_TEST_INT", raising=False)
    assert env_int("GP_TEST_INT", 7) == 7
    monkeypatch.setenv("GP_TEST_INT", " ")
    assert env_int("GP_TEST_INT", 7) == 7
    monkeypatch.setenv("GP_TEST_INT", "42")
    assert env_int("GP_TEST_INT", 7) == 42
    monkeypatch.setenv("GP_TEST_INT", "4.5")
    with pytest.raises(ImproperlyConfigured, match="GP_TEST_INT: expected an integer"):
        env_int("GP_TEST_INT", 7)


def test_env_float(monkeypatch):
    monkeypatch.delenv("GP_TEST_FLOAT", raising=False)
    assert env_float("GP_TEST_FLOAT", 3.05) == 3.05
    monkeypatch.setenv("GP_TEST_FLOAT", "12")
    assert env_float("GP_TEST_FLOAT", 3.05) == 12.0
    monkeypatch.setenv("GP_TEST_FLOAT", "0.5")
    assert env_float("GP_TEST_FLOAT", 3.05) == 0.5
    for bad in ("soon", "nan", "inf"):
        monkeypatch.setenv("GP_TEST_FLOAT", bad)
        with pytest.raises(ImproperlyConfigured, match="GP_TEST_FLOAT: expected a"):
            env_float("GP_TEST_FLOAT", 3.05)


def test_env_list_and_env_choice(monkeypatch):
    monkeypatch.setenv("GP_TEST_LIST", " a, b ,,c ")
    assert env_list("GP_TEST_LIST", []) == ["a", "b", "c"]
    monkeypatch.setenv("GP_TEST_CHOICE", "JSON")
    assert env_choice("GP_TEST_CHOICE", "text", ("text", "json")) == "json"
    monkeypatch.setenv("GP_TEST_CHOICE", "xml")
    with pytest.raises(ImproperlyConfigured, match="GP_TEST_CHOICE: expected one of text, json"):
        env_choice("GP_TEST_CHOICE", "text", ("text", "json"))


def test_parse_database_url_and_check_redis_url():
    db = parse_database_url("postgres://u:p%40ss@db.example:5433/portal?sslmode=require")
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "portal",
        "u",
        "p@ss",
        "db.example",
        "5433",
    )
    assert db["OPTIONS"] == {"sslmode": "require"}
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL: the database name is missing"):
        parse_database_url("postgres://db.example:5432/")
    assert check_redis_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL: expected redis://"):
        check_redis_url("http://127.0.0.1:6379/0")
