"""The JSON API fuzzed from its own OpenAPI schema (schemathesis): no 5xx, no schema violation.

Runs in-process over WSGI against the real database holding the sandbox inventory, as an admin
with a bearer token (every operation reachable). Examples are bounded (FUZZ_MAX_EXAMPLES, default
8 per operation) so the whole run stays under a minute.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "8"))

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


def test_api_answers_every_generated_request_within_its_schema(api_schema, api_token):
    """Every operation, MAX_EXAMPLES generated requests each; all failures reported together."""
    headers = {"Authorization": f"Bearer {api_token}"}
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert operations, "the schema lists no operation"

    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            response = case.call(headers=headers)
            case.validate_response(response, checks=CHECKS)

        try:
            fuzz()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - collect, so one failing operation hides no other
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert not failures, f"{len(failures)} of {len(operations)} operations failed:\n\n" + "\n\n".join(failures)
