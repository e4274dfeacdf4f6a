"""The rollbacks fragment of the OpenAPI document is consistent and matches the API's answers."""

from __future__ import annotations

import pytest
from openapi_schema_validator import OAS31Validator

from gitopsportal.openapi import build_schema
from rollbacks.openapi import SCHEMAS


def test_the_schema_documents_the_rollback_endpoints_with_resolvable_refs():
    schema = build_schema()
    assert {"/rollbacks", "/rollbacks/{id}", "/rollbacks/{id}/cancel"} <= set(schema["paths"])
    names = set(schema["components"]["schemas"])

    def refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    mine = {k: v for k, v in schema["paths"].items() if k.startswith("/rollbacks")}
    for ref in refs(mine):
        assert ref.removeprefix("#/components/schemas/") in names, ref
    for name in ("Rollback", "RollbackRequest"):
        OAS31Validator.check_schema(SCHEMAS[name])


@pytest.mark.django_db
def test_an_api_answer_validates_against_the_rollback_schema():
    from inventory.models import Environment
    from rollbacks.api import rollback_as_json
    from rollbacks.models import RollbackRequest
    from tests.factories import ApplicationFactory

    rollback = RollbackRequest.objects.create(
        application=ApplicationFactory(name="cart"), environment=Environment.objects.create(name="prod"),
        mode="commit", requested_by_name="x", reason="r", base_branch="main",
        current_revision="a" * 40, revert_shas=["b" * 40],
    )  # fmt: skip
    import json

    from django.core.serializers.json import DjangoJSONEncoder

    payload = json.loads(json.dumps(rollback_as_json(rollback), cls=DjangoJSONEncoder))
    OAS31Validator(SCHEMAS["Rollback"]).validate(payload)
