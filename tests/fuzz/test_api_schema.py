"""The JSON API fuzzed from its own OpenAPI schema (schemathesis): no 5xx, no schema violation.

Runs in-process over WSGI against the real database holding the sandbox inventory, as an admin
with a bearer token (every operation reachable). Examples are bounded (FUZZ_MAX_EXAMPLES, default
15 per operation and mode) so the whole run stays under a minute.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "15"))

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def api_token(sandbox_inventory) -> str:
    from django.contrib.auth.models import Group

    from accounts.roles import ALL_ROLES
    from accounts.services import api_token_create
    from tests.factories import UserFactory

    for role in ALL_ROLES:
        Group.objects.get_or_create(name=role)
    user = UserFactory(username="fuzzer", roles=list(ALL_ROLES))
    _token, raw = api_token_create(user=user, name="fuzz")
    return raw


@pytest.fixture
def api_schema(api_token):
    from django.core.wsgi import get_wsgi_application

    schema = schemathesis.openapi.from_wsgi(
        "/api/schema", get_wsgi_application(), headers={"Authorization": f"Bearer {api_token}"}
    )
    return schema


def _not_a_server_error(ctx, response, case):
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} answered {response.status_code}: {response.text[:500]}"
    )


CHECKS = [_not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _fuzz(operation, mode, checks, headers) -> None:
    """Run MAX_EXAMPLES generated requests of one operation in one mode through ``checks``."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case):
        response = case.call(headers=headers)
        case.validate_response(response, checks=checks)

    fuzz()


def test_api_answers_every_generated_request_within_its_schema(api_schema, api_token):
    """Every operation with valid and with invalid requests; all failures reported together.

    Valid requests (positive mode) must get a documented answer; invalid ones (negative mode:
    wrong types, missing fields, out-of-range values) must be refused with a 4xx, never a 5xx.
    """
    headers = {"Authorization": f"Bearer {api_token}"}
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert operations, "the schema lists no operation"

    for operation in operations:
        for mode, checks in (
            (GenerationMode.POSITIVE, CHECKS),
            (GenerationMode.NEGATIVE, [_not_a_server_error]),
        ):
            try:
                _fuzz(operation, mode, checks, headers)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # collected, so one failing operation hides no other
                failures.append(
                    f"{operation.method.upper()} {operation.path} ({mode.value}): {str(exc)[:1500]}"
                )
    assert not failures, f"{len(failures)} failures over {len(operations)} operations:\n\n" + "\n\n".join(
        failures
    )
