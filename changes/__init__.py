"""The change-request lifecycle shared by promotions and rollbacks: one lifecycle, two kinds.

Public API (a kind is a `ChangeKind` registered from its app's AppConfig.ready()):

- lifecycle.py: `ChangeKind`, `change_kind_register`, `change_kinds`, `changes_in_flight`;
  `change_claim` / `change_release` (conditional UPDATE on `claimed_until`, lease
  PROMOTION_PR_LEASE_SECONDS); `change_enqueue`, `change_enqueue_pr_open`, `change_enqueue_track`
  (tasks sent by name after commit); `change_transition`, `change_fail` (state change and its
  `<kind>.<action>` ledger event in one transaction); `change_pr_open` (claim → the kind's
  `build(change) -> PullRequestResult` → `change_pr_record`; a forge Retry-After longer than
  CELERY_RETRY_BACKOFF_MAX is stored in the kind's `retry_not_before` field for the sweeper);
  `change_branch_trust` (the `BranchTrust` a build puts in its spec: the recorded
  `pushed_head_sha` and `pushed_base_sha`, recorded before each push, the commit date for
  deterministic rebuilds, and `change_branch_pushed` once the forge has it: `branch_pushed_at` and
  `<kind>.branch_pushed`) and `change_branch_replace` (a fresh branch name and
  `<kind>.branch_replaced`); `change_branch_push` (the request-time push of kinds with a
  `push_task`: claimed in `push_states`, `branch_ensure`, no PR) and `change_enqueue_push`;
  `change_head_moved` (a `BranchMoved`: `<kind>.branch_moved`, the kind's `on_head_moved`
  invalidates approvals; a foreign head fails the change as tampered, the portal's own different
  rebuild sends it back to awaiting approval); `change_record` (ledger event + change record),
  `change_requester_fields`; `ChangeFailed` (a kind's permanent, readable failure).
- pullrequests.py: `branch_ensure` (the branch alone, idempotent), `pull_request_ensure` (idempotent;
  reuses the pushed branch; a lost one is rebuilt on the recorded base to the same SHA or raises
  `BranchMoved`; adopts only the portal's own PR and branch:
  `pull_request_distrust`, `forge_login`), `pull_request_refresh`,
  `pull_request_close_and_delete_branch`, `branch_name_unguessable`, `forge_for`,
  errors `PullRequestRetryable` / `PullRequestPermanent`, webhook hook `register_pr_state_handler`.
- checks.py: `checks_verdict` (the one verdict of the PR head's checks against `required_checks`:
  names or `any`; nothing reported is never success), `pull_request_head_checks`,
  `change_checks_record` / `change_checks_refresh` (stored on the change, `<kind>.checks_failed` /
  `<kind>.checks_passed` in the same transaction), `checks_panel` (pages),
  `pull_request_merge_when_checks_pass` (at the recorded head, after `checks_verdict`).
- portalstatus.py: `change_status_publish` (the kind's `status_verdict` posted as the portal's commit
  status PORTAL_STATUS_CONTEXT on the head, once per verdict; 403 kept in `portal_status_error`),
  `change_status_refresh` (never raises: tracking ticks), `gates_status`, `PortalStatus`.
- tracking.py: `change_tracked`, `change_pr_read`, `change_pr_head_moved` (an open PR off the pushed
  head: tampered), `change_tracking_error`, `deploy_timeout`,
  `deploy_timed_out`, `change_deploy_timeout`, `change_fail_after_merge`.
- sweeper.py: `change_sweep(kind=..., now=...)`.
- backoff.py: `retry_countdown` (the one backoff), `task_run_with_retries` (thin task bodies).

This package imports no kind: kinds import it. It may import integrations/, audit's service
functions and core/.
"""
