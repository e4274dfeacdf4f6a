"""The portal's roles. A role is a Django group (global grant) or a scoped RoleGrant."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    RELEASE_MANAGER = "release_manager"
    APPROVER = "approver"
    ONCALL = "oncall"
    AUDITOR = "auditor"
    ADMIN = "admin"


ALL_ROLES: tuple[str, ...] = tuple(role.value for role in Role)

ROLE_DESCRIPTIONS: dict[str, str] = {
    Role.VIEWER: "Sees what runs where, promotions and rollbacks.",
    Role.RELEASE_MANAGER: "Requests promotions and clears rollback flags for the apps of their projects.",
    Role.APPROVER: "Approves or rejects promotions requested by others.",
    Role.ONCALL: "Requests rollbacks (Git revert pull requests).",
    Role.AUDITOR: "Reads the audit trail, change records and exports evidence.",
    Role.ADMIN: "Everything, including settings and tokens.",
}
