"""Observed state: Argo CD instances, repositories, environments, apps, deployments and commits."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from core.fields import EncryptedTextField

# Where Argo CD keeps its Applications unless they live in other namespaces ("apps in any namespace").
DEFAULT_ARGOCD_NAMESPACE = "argocd"


class ArgoInstance(models.Model):
    """One Argo CD API server the portal polls."""

    name = models.SlugField(max_length=100, unique=True)
    url = models.URLField(max_length=500)
    token = EncryptedTextField(blank=True)
    verify_tls = models.BooleanField(default=True)
    allow_http = models.BooleanField(default=False)
    # Poll bookkeeping: the matrix shows data of a failing instance as stale, never as current.
    last_poll_started_at = models.DateTimeField(null=True, blank=True)
    last_poll_finished_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_duration_ms = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    is_stale = models.BooleanField(default=False)
    apps_seen = models.IntegerField(default=0)
    list_resource_version = models.CharField(max_length=64, blank=True)
    # How Argo CD Applications map to (app, environment, cluster): written by config_apply.
    mapping = models.JSONField(default=dict, blank=True)
    cluster_env_label = models.CharField(max_length=200, default="env")
    last_poll_stats = models.JSONField(default=dict, blank=True)
    stale_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class GitRepository(models.Model):
    """A GitOps repository: where its Git lives, which forge hosts its pull requests."""

    FORGE_CHOICES = [("github", "GitHub"), ("gitea", "Gitea / Forgejo"), ("gitlab", "GitLab")]

    name = models.SlugField(max_length=100, unique=True)
    url = models.CharField(max_length=500, help_text="Clone URL")
    default_branch = models.CharField(max_length=200, default="main")
    forge_kind = models.CharField(max_length=16, choices=FORGE_CHOICES, default="github")
    api_url = models.CharField(max_length=500, blank=True)
    full_name = models.CharField(max_length=300, help_text="owner/repo on the forge")
    web_url = models.CharField(max_length=500, blank=True, help_text="Base for commit links")
    token = EncryptedTextField(blank=True)
    webhook_secret = EncryptedTextField(blank=True)
    allow_http = models.BooleanField(default=False)
    last_fetch_at = models.DateTimeField(null=True, blank=True)
    last_ingested_sha = models.CharField(max_length=64, blank=True)
    last_ingest_duration_ms = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    commits_count = models.IntegerField(default=0)
    base_path_pattern = models.CharField(
        max_length=300, default="apps/{app}", help_text="An app's shared base"
    )
    # Branch → head SHA already ingested: the next `git log` excludes them (incremental ingest).
    ingested_heads = models.JSONField(default=dict, blank=True)
    last_ingest_started_at = models.DateTimeField(null=True, blank=True)
    last_ingest_finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name

    def commit_url(self, sha: str) -> str:
        base = (self.web_url or "").rstrip("/")
        return f"{base}/commit/{sha}" if base else ""


class Environment(models.Model):
    """A stage in the promotion order (dev → stage → prod)."""

    name = models.SlugField(max_length=64, unique=True)
    order = models.PositiveIntegerField(default=0)
    branch = models.CharField(max_length=200, default="main")
    path_pattern = models.CharField(max_length=300, default="environments/{env}/{app}")
    requires_approval = models.BooleanField(default=False)
    approvals_required = models.PositiveSmallIntegerField(default=1)
    soak_minutes = models.PositiveIntegerField(default=0)
    allow_skip_from = models.JSONField(
        default=list, blank=True, help_text="Environments allowed to skip ahead to this one"
    )
    production_like = models.BooleanField(default=False)
    rollback_auto_merge = models.BooleanField(default=False)
    # Check names an automatic merge needs at the PR head, or ["any"] / []: every reported check,
    # and at least one (changes.checks.checks_verdict).
    required_checks = models.JSONField(default=list, blank=True)
    # Who syncs the Argo CD apps after a merge (config `sync`): Argo CD's auto-sync, or the portal
    # (POST .../sync with the merged revision, in the AppProject's sync windows); `sync_options`
    # are the config's flags (prune, apply_out_of_sync_only, ...: inventory.config).
    sync_mode = models.CharField(
        max_length=16, choices=[("argocd", "Argo CD auto-sync"), ("portal", "portal")], default="argocd"
    )
    sync_options = models.JSONField(default=dict, blank=True)
    # Zero-downtime checklist modes that differ from the defaults: {check id: off | warn | block}
    # (core.zerodowntime.CHECKS; changes.checklist.environment_modes fills in the defaults).
    checklist = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name

    def app_path(self, app: str) -> str:
        return self.path_pattern.format(env=self.name, app=app)

    @property
    def portal_syncs(self) -> bool:
        """True when the portal, not Argo CD's auto-sync, applies merged changes (`sync: portal`)."""
        return self.sync_mode == "portal"

    audit_target_type = "environment"

    @property
    def audit_scope(self) -> tuple[str, str]:
        """Return ``(project, environment)`` for the audit ledger's scope columns (audit/scope.py)."""
        return "", self.name


class Cluster(models.Model):
    """A Kubernetes cluster registered in an Argo CD instance (labels env/region/tier)."""

    instance = models.ForeignKey(ArgoInstance, on_delete=models.CASCADE, related_name="clusters")
    name = models.CharField(max_length=200)
    server = models.CharField(max_length=500)
    labels = models.JSONField(default=dict, blank=True)
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="clusters"
    )
    connection_status = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["instance", "server"], name="uniq_cluster_server")]

    def __str__(self) -> str:
        return self.name


class Application(models.Model):
    """A logical app (a service) that runs in several environments and clusters."""

    STRATEGY_CHOICES = [
        ("kustomize-images", "kustomize images"),
        ("helm-values", "Helm values"),
        ("copy-paths", "copy paths"),
    ]

    name = models.CharField(max_length=200, unique=True)
    project = models.CharField(max_length=200, db_index=True, help_text="Argo CD AppProject / team")
    repository = models.ForeignKey(
        GitRepository, null=True, blank=True, on_delete=models.SET_NULL, related_name="applications"
    )
    strategy = models.CharField(max_length=32, choices=STRATEGY_CHOICES, default="kustomize-images")
    strategy_options = models.JSONField(default=dict, blank=True)
    # Which Argo CD apps may join this app (inventory/ownership.py): their AppProject must be one of
    # `argocd_projects` and their instance one of `argocd_instances` (any when empty). The pin comes
    # from the configuration (the app's own entry or an `ownership` glob) or from the first Argo CD
    # app seen; an Argo CD app outside it is a conflict, never merged.
    argocd_projects = models.JSONField(default=list, blank=True)
    argocd_instances = models.JSONField(default=list, blank=True)
    pin_source = models.CharField(max_length=16, blank=True, default="")
    # Set after a rollback: blocks re-promoting the reverted version until a release manager clears it.
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ArgoApplicationQuerySet(models.QuerySet):
    def live(self) -> ArgoApplicationQuerySet:
        return self.filter(deleted_at__isnull=True)


class ArgoApplication(models.Model):
    """The current observed state of one Argo CD Application (app x environment x cluster)."""

    instance = models.ForeignKey(ArgoInstance, on_delete=models.CASCADE, related_name="applications")
    name = models.CharField(max_length=253)
    application = models.ForeignKey(
        Application, null=True, blank=True, on_delete=models.SET_NULL, related_name="argo_apps"
    )
    # The portal app this Argo CD app names (label, pattern or override) and, when it may not join
    # it (inventory/ownership.py), why: such a row is stored with `application` empty.
    claimed_app = models.CharField(max_length=200, blank=True, default="", db_index=True)
    ownership_conflict = models.CharField(max_length=500, blank=True, default="")
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="argo_apps"
    )
    cluster = models.ForeignKey(
        Cluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="argo_apps"
    )
    project = models.CharField(max_length=200, blank=True, db_index=True)
    namespace = models.CharField(max_length=253, blank=True, help_text="destination namespace")
    # The namespace the Application resource lives in (Argo CD's own, or apps in any namespace).
    app_namespace = models.CharField(max_length=253, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    repo_url = models.CharField(max_length=500, blank=True)
    path = models.CharField(max_length=500, blank=True)
    target_revision = models.CharField(max_length=200, blank=True)
    sources = models.JSONField(default=list, blank=True)
    is_multi_source = models.BooleanField(default=False)
    automated = models.BooleanField(default=False)
    sync_status = models.CharField(max_length=32, blank=True)
    health_status = models.CharField(max_length=32, blank=True)
    health_message = models.TextField(blank=True)
    operation_phase = models.CharField(max_length=32, blank=True)
    operation_message = models.TextField(blank=True)
    operation_started_at = models.DateTimeField(null=True, blank=True)
    operation_finished_at = models.DateTimeField(null=True, blank=True)
    sync_result = models.JSONField(
        null=True, blank=True, help_text="the last operationState as change records carry it"
    )
    revision = models.CharField(max_length=64, blank=True, help_text="status.sync.revision")
    revisions = models.JSONField(default=list, blank=True, help_text="status.sync.revisions (multi-source)")
    deployed_revision = models.CharField(
        max_length=64, blank=True, help_text="revision of the last successful sync"
    )
    deployed_at = models.DateTimeField(null=True, blank=True)
    images = models.JSONField(default=list, blank=True)
    version = models.CharField(
        max_length=200, blank=True, help_text="image tag or digest shown in the matrix"
    )
    reconciled_at = models.DateTimeField(null=True, blank=True)
    state_hash = models.CharField(
        max_length=64, blank=True, help_text="hash of the observed state, skips unchanged rows"
    )
    list_hash = models.CharField(
        max_length=64,
        blank=True,
        help_text="hash of the raw list item last stored: an unchanged item is not even parsed",
    )
    list_neutral_hash = models.CharField(
        max_length=64,
        blank=True,
        help_text="hash of the raw list item last parsed, its status.sync.revision blanked: "
        "a later item with the same one differs only in that revision",
    )
    hashed_revision = models.CharField(
        max_length=64,
        blank=True,
        help_text="the sync revision state_hash was computed with, when a revision-only list "
        "update has moved `revision` since (empty: `revision`)",
    )
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_changed_at = models.DateTimeField(default=timezone.now)
    out_of_sync_since = models.DateTimeField(null=True, blank=True)
    degraded_since = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = ArgoApplicationQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["instance", "name"], name="uniq_argo_app")]
        indexes = [
            models.Index(fields=["application", "environment"], name="argo_app_env"),
            # The matrix counts the apps that run somewhere (10,000 apps: an index-only scan).
            models.Index(
                fields=["application"], condition=models.Q(deleted_at__isnull=True), name="argo_live_app"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def running_revision(self) -> str:
        """What runs: the last sync's revision. status.sync.revision is what Argo CD compares with,
        already the new head for an OutOfSync app of a manual-sync environment."""
        return self.deployed_revision or self.revision

    @property
    def argocd_url(self) -> str:
        """The app's page in the Argo CD UI (the API server serves the UI at the same address)."""
        base = self.instance.url.rstrip("/")
        return f"{base}/applications/{self.app_namespace or DEFAULT_ARGOCD_NAMESPACE}/{self.name}"


class Deployment(models.Model):
    """One status.history entry of an Argo CD Application, kept after Argo CD drops it."""

    argo_app = models.ForeignKey(ArgoApplication, on_delete=models.CASCADE, related_name="deployments")
    history_id = models.BigIntegerField()
    application = models.ForeignKey(
        Application, null=True, blank=True, on_delete=models.SET_NULL, related_name="deployments"
    )
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="deployments"
    )
    cluster = models.ForeignKey(
        Cluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="deployments"
    )
    revision = models.CharField(max_length=64, blank=True)
    revisions = models.JSONField(default=list, blank=True)
    deploy_started_at = models.DateTimeField(null=True, blank=True)
    deployed_at = models.DateTimeField(db_index=True)
    initiated_by = models.CharField(max_length=200, blank=True)
    automated = models.BooleanField(default=False)
    images = models.JSONField(default=list, blank=True)
    version = models.CharField(max_length=200, blank=True)
    source_path = models.CharField(max_length=500, blank=True)
    observed_at = models.DateTimeField(default=timezone.now)
    # Deployments not caused by a portal promotion/rollback (manual sync, Argo CD UI rollback).
    out_of_band = models.BooleanField(default=False)

    class Meta:
        ordering = ["-deployed_at", "-history_id"]
        constraints = [
            models.UniqueConstraint(fields=["argo_app", "history_id"], name="uniq_deployment_history")
        ]
        indexes = [
            models.Index(fields=["application", "environment", "-deployed_at"], name="deploy_app_env_time"),
            models.Index(fields=["environment", "-deployed_at"], name="deploy_env_time"),
        ]

    def __str__(self) -> str:
        return f"{self.argo_app_id}#{self.history_id} {self.revision[:8]}"

    audit_target_type = "deployment"

    @property
    def audit_scope(self) -> tuple[str, str]:
        """Return ``(project, environment)`` for the audit ledger's scope columns (audit/scope.py)."""
        return (
            self.application.project if self.application else "",
            self.environment.name if self.environment else "",
        )


class Commit(models.Model):
    """A commit of a GitOps repository, ingested from `git log`."""

    # No index of its own: uniq_commit_sha and uniq_commit_seq start with it (one index fewer to
    # update per commit, 100,000 of them in a first ingest).
    repository = models.ForeignKey(
        GitRepository, on_delete=models.CASCADE, related_name="commits", db_index=False
    )
    sha = models.CharField(max_length=64)
    # Order of ingest in topological order (parents first): cheap "newer than" comparisons.
    seq = models.BigIntegerField()
    parents = models.JSONField(default=list)
    author_name = models.CharField(max_length=200)
    author_email = models.CharField(max_length=200)
    authored_at = models.DateTimeField()
    committer_name = models.CharField(max_length=200)
    committed_at = models.DateTimeField()
    message = models.TextField()
    is_merge = models.BooleanField(default=False)
    # "Promotion-Id: …" / "Rollback-Id: …" trailer or merged promote/… / rollback/… branch: the
    # commit came from a portal pull request (empty: it did not).
    portal_ref = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-seq"]
        constraints = [
            models.UniqueConstraint(fields=["repository", "sha"], name="uniq_commit_sha"),
            models.UniqueConstraint(fields=["repository", "seq"], name="uniq_commit_seq"),
        ]

    def __str__(self) -> str:
        return self.sha[:12]

    @property
    def short_sha(self) -> str:
        return self.sha[:8]

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]


class CommitTouch(models.Model):
    """A commit changed an app's files in an environment (environment null: the app's shared base)."""

    # Neither has an index of its own: uniq_commit_touch starts with commit, touch_app_env_seq with
    # application (fewer indexes to update per touch when a history is ingested).
    # No constraint in the database for the three (db_constraint=False; Django's CASCADE still
    # deletes touches with their commit, app or environment): touches are derived from Git and
    # written only by the ingest, in the transaction that writes their commits, with ids it just
    # read. PostgreSQL's per-row checks of them (a trigger, a lookup and a row lock each, 300,000
    # for a 100,000-commit history) were half of its work in a first ingest.
    commit = models.ForeignKey(
        Commit, on_delete=models.CASCADE, related_name="touches", db_index=False, db_constraint=False
    )
    application = models.ForeignKey(
        Application,
        on_delete=models.CASCADE,
        related_name="commit_touches",
        db_index=False,
        db_constraint=False,
    )
    environment = models.ForeignKey(
        Environment,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="commit_touches",
        db_constraint=False,
    )
    seq = models.BigIntegerField(help_text="copy of commit.seq for range queries")
    paths = models.JSONField(default=list)
    # The commit changed what a promotion out of this environment copies (inventory.carried);
    # null: not evaluated (the shared base, or ingested before the rule existed): counted.
    carried = models.BooleanField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["commit", "application", "environment"], name="uniq_commit_touch")
        ]
        indexes = [models.Index(fields=["application", "environment", "seq"], name="touch_app_env_seq")]

    def __str__(self) -> str:
        return f"{self.commit_id} -> {self.application_id}/{self.environment_id or 'base'}"
