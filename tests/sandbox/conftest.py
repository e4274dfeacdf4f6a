"""Shared fixtures of the sandbox tests: contract validation against the real Argo CD swagger."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest

from sandbox.argocd import ArgoCDEmulator
from sandbox.repogen import GeneratedRepo
from tests.shared_paths import SHARED

SWAGGER = SHARED / "argocd/swagger.json"


def _strict(defs: dict[str, Any]) -> dict[str, Any]:
    """Close every object schema (additionalProperties: false) so unknown or renamed keys fail."""
    defs = copy.deepcopy(defs)
    for schema in defs.values():
        for part in schema.pop("allOf", []):
            ref = defs[part["$ref"].split("/")[-1]]
            schema.setdefault("properties", {}).update(ref.get("properties", {}))
    for schema in defs.values():
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    return defs


@pytest.fixture(scope="module")
def validate() -> Callable[[str, Any], None]:
    if not SWAGGER.exists():
        pytest.skip("swagger.json not available")
    definitions = _strict(json.loads(SWAGGER.read_text())["definitions"])

    def _validate(definition: str, instance: Any) -> None:
        schema = {"$ref": f"#/definitions/{definition}", "definitions": definitions}
        jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(instance)

    return _validate


@pytest.fixture
def start_argo(repo: GeneratedRepo) -> Iterator[Callable[..., ArgoCDEmulator]]:
    """Start emulators on the module's ``repo`` (fast reconciles, no windows); stopped afterwards."""
    started: list[ArgoCDEmulator] = []

    def _start(**kwargs: Any) -> ArgoCDEmulator:
        kwargs.setdefault("reconcile_interval", 0.05)
        kwargs.setdefault("sync_windows", {})
        emu = ArgoCDEmulator(repo.path, "https://git.example.com/acme/gitops.git", **kwargs)
        emu.start()
        started.append(emu)
        return emu

    yield _start
    for emu in started:
        emu.stop()
