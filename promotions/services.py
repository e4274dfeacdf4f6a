"""Promotion services, the app's public API; each lives in its room.

- preview.py: what a promotion would do, and its gates (`promotion_preview`, `PromotionRefused`)
- requests.py: request, approve/reject (four eyes), cancel, an approver's checklist override
- pullrequests.py: the branch of a promotion (pushed at request time, before approval) and its PR
  (title, body); pushing, opening and closing them
- rendered.py: what the promotion changes in the cluster, rendered by Argo CD (`promotion_rendered`)
- tracking.py: merged → deployed → Healthy, the sweeper
- blocks.py: versions that must not be promoted again; records.py: ledger events, change records
The lifecycle those share with rollbacks (claims, backoff, PR ensure, tracking, sweeping) is the
`changes` package. Every state change writes its audit event in the same transaction.
"""

from __future__ import annotations

from .blocks import promotion_block_clear, promotion_block_create
from .preview import ItemPreview, PromotionPreview, PromotionRefused, PromotionRetryLater, promotion_preview
from .pullrequests import (
    branch_name,
    promotion_branch_push,
    promotion_branch_verify,
    promotion_close_pr,
    promotion_fail,
    promotion_pr_open,
)
from .records import change_record_source_id
from .rendered import promotion_rendered
from .requests import (
    promotion_approve,
    promotion_cancel,
    promotion_checklist_override,
    promotion_reject,
    promotion_request_create,
)
from .tracking import (
    SYNC_RETRY_ROLES,
    promotion_status_publish,
    promotion_sync,
    promotion_sync_override,
    promotion_sync_retry,
    promotion_track,
    promotions_sweep,
)

__all__ = [
    "SYNC_RETRY_ROLES",
    "ItemPreview",
    "PromotionPreview",
    "PromotionRefused",
    "PromotionRetryLater",
    "branch_name",
    "change_record_source_id",
    "promotion_approve",
    "promotion_block_clear",
    "promotion_block_create",
    "promotion_branch_push",
    "promotion_branch_verify",
    "promotion_cancel",
    "promotion_checklist_override",
    "promotion_close_pr",
    "promotion_fail",
    "promotion_pr_open",
    "promotion_preview",
    "promotion_reject",
    "promotion_rendered",
    "promotion_request_create",
    "promotion_status_publish",
    "promotion_sync",
    "promotion_sync_override",
    "promotion_sync_retry",
    "promotion_track",
    "promotions_sweep",
]
