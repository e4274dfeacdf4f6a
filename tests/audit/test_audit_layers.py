"""Audit is a sink: its ledger modules import no domain app, directly or through another module."""

from __future__ import annotations

import grimp
import pytest

SINK = ("audit.models", "audit.services", "audit.actions", "audit.scope", "audit.chain", "audit.bundle",
        "audit.signing", "audit.verify", "audit.exports", "audit.selectors", "audit.filters", "audit.context",
        "audit.tasks")  # fmt: skip
DOMAIN = ("inventory", "promotions", "rollbacks", "insight", "accounts", "gitopsportal", "integrations")
# The pages need the role checks: these page modules may import accounts (and the API plumbing).
PAGES_MAY_IMPORT = {
    "audit.access": {"accounts"},
    "audit.views": {"accounts"},
    "audit.api": {"accounts"},
}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("audit", "core", *DOMAIN)


@pytest.mark.parametrize("module", SINK)
def test_the_sink_imports_no_domain_app(graph, module):
    chains = {
        package: graph.find_shortest_chain(importer=module, imported=package, as_packages=True)
        for package in DOMAIN
    }
    assert {package: chain for package, chain in chains.items() if chain} == {}


def test_the_audit_pages_import_only_the_role_checks(graph):
    for module, allowed in PAGES_MAY_IMPORT.items():
        direct = {imported.split(".")[0] for imported in graph.find_modules_directly_imported_by(module)}
        assert direct & set(DOMAIN) <= allowed, module
