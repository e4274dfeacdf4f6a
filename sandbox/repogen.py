"""Demo GitOps repository generator (blueprint "Pattern A" layout, see docs/architecture.md).

The whole history is produced as one ``git fast-import`` stream so that 100k commits take seconds,
not hours: one subprocess, no working tree, no per-commit git calls. Everything (names, versions,
authors, dates) derives from ``random.Random(seed)`` and a fixed ``end`` date, so a given seed always
yields the same commit SHAs.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Protocol

from core.kustomize import KustomizeImage

REGISTRY = "registry.example.com/acme"
DEFAULT_END = "2026-11-20T12:00:00Z"
HISTORY_SPAN = timedelta(days=182)

TEAMS: tuple[str, ...] = (
    "payments",
    "checkout",
    "platform",
    "search",
    "identity",
    "catalog",
    "notifications",
    "data",
)
TEAM_SERVICES: dict[str, tuple[str, ...]] = {
    "payments": ("ledger", "card-gateway", "fraud-scoring", "invoicing", "refunds", "payouts"),
    "checkout": ("cart", "checkout-api", "pricing", "tax-calc", "order-service", "vouchers"),
    "platform": ("auth-proxy", "config-service", "feature-flags", "rate-limiter", "audit-sink", "dns-sync"),
    "search": ("search-api", "indexer", "ranking", "autocomplete", "query-logger", "synonyms"),
    "identity": ("accounts", "sessions", "mfa-service", "profile-api", "consent", "token-issuer"),
    "catalog": ("catalog-api", "inventory", "media-resizer", "reviews", "recommendations", "price-feed"),
    "notifications": ("email-sender", "push-gateway", "sms-relay", "templates", "digest-worker", "webhooks"),
    "data": ("events-ingest", "etl-runner", "reporting-api", "warehouse-loader", "metrics-agg", "exporter"),
}
REGIONS: tuple[str, ...] = (
    "eu-west-1",
    "us-east-1",
    "ap-southeast-1",
    "eu-central-1",
    "us-west-2",
    "ap-northeast-1",
    "sa-east-1",
    "ca-central-1",
)
ENV_TIERS = {"prod": "gold", "stage": "silver", "dev": "bronze"}

# (name, email, git timezone offset) of the humans who promote and change config.
HUMANS: tuple[tuple[str, str, str], ...] = (
    ("Alice Martin", "alice.martin@example.com", "+0100"),
    ("Bob Okafor", "bob.okafor@example.com", "+0000"),
    ("Chen Wei", "chen.wei@example.com", "+0800"),
    ("Dana Kowalski", "dana.kowalski@example.com", "+0100"),
    ("Elena Rossi", "elena.rossi@example.com", "+0100"),
    ("Farid Haddad", "farid.haddad@example.com", "+0400"),
    ("Grace Kim", "grace.kim@example.com", "-0500"),
    ("Hugo Lefebvre", "hugo.lefebvre@example.com", "+0100"),
    ("Ines Duarte", "ines.duarte@example.com", "+0000"),
    ("Jonas Berg", "jonas.berg@example.com", "-0800"),
)
HELM_SERVICES = ("web", "worker", "cron", "gateway")
CI_BOT = ("ci-bot", "ci-bot@example.com", "+0000")
FEATURE_FLAGS = ("NEW_CHECKOUT_FLOW", "ASYNC_WRITES", "CACHE_V2", "STRICT_TLS", "BATCH_MODE")
LOG_LEVELS = ("info", "debug", "warn")

Author = tuple[str, str, str]


@dataclass(frozen=True)
class AppSpec:
    """One service. ``source`` is how Argo CD renders it: ``kustomize`` (base + overlays) or ``helm``
    (a chart in ``apps/<app>/chart`` with ``environments/<env>/<app>/values.yaml``); ``workload`` is
    ``Deployment`` or an Argo Rollouts ``Rollout``; ``migrations`` adds a PreSync migration Job hook."""

    name: str
    team: str
    uses_digest: bool = False
    source: str = "kustomize"
    workload: str = "Deployment"
    migrations: bool = False


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    env: str
    region: str
    tier: str

    @property
    def server(self) -> str:
        return f"https://{self.name}.k8s.example"

    @property
    def labels(self) -> dict[str, str]:
        return {"env": self.env, "region": self.region, "tier": self.tier}


@dataclass(frozen=True)
class GeneratedRepo:
    path: Path
    head_sha: str
    apps: list[AppSpec]
    clusters: list[ClusterSpec]
    envs: tuple[str, ...]
    commits: int = 0

    @property
    def teams(self) -> list[str]:
        return sorted({a.team for a in self.apps})


# ---------------------------------------------------------------------------------------------------
# Mutable model of the repo content while history is generated.


@dataclass
class EnvState:
    version: tuple[int, int, int]
    replicas: int
    log_level: str = "info"
    flags: dict[str, bool] = field(default_factory=dict)


@dataclass
class AppState:
    spec: AppSpec
    envs: dict[str, EnvState]
    memory_mi: int
    cpu_m: int


def tag_of(version: tuple[int, int, int]) -> str:
    return "{}.{}.{}".format(*version)


def digest_of(app: str, version: tuple[int, int, int]) -> str:
    # Stable fake image digest: the "same build" always has the same digest in every env.
    return "sha256:" + hashlib.sha256(f"{REGISTRY}/{app}:{tag_of(version)}".encode()).hexdigest()


def image_ref_label(app: AppSpec, version: tuple[int, int, int]) -> str:
    """How humans name a build in commit messages: the tag, or a short digest for digest-pinned apps."""
    return digest_of(app.name, version)[:19] if app.uses_digest else tag_of(version)


# ---------------------------------------------------------------------------------------------------
# File renderers. Plain f-strings: a YAML library would be ~100x slower at 100k commits.


# Canary steps of the demo's Rollouts: short pauses so a promotion can be followed step by step.
CANARY_STEPS = """    canary:
      steps:
        - setWeight: 20
        - pause:
            duration: 5s
        - setWeight: 50
        - pause:
            duration: 5s
        - setWeight: 80
        - pause:
            duration: 5s
"""


def workload_file(spec: AppSpec) -> str:
    return "rollout.yaml" if spec.workload == "Rollout" else "deployment.yaml"


def render_deployment(app: AppState) -> str:
    """The app's workload: a Deployment, or an Argo Rollouts Rollout with a canary strategy."""
    n, team = app.spec.name, app.spec.team
    if app.spec.workload == "Rollout":
        head = "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\n"
        strategy = "  strategy:\n" + CANARY_STEPS
    else:
        head = "apiVersion: apps/v1\nkind: Deployment\n"
        strategy = (
            "  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 25%\n"
            "      maxUnavailable: 0\n"
        )
    # Apps with a migration run it as a PreSync hook, then roll the workload out after its config.
    wave = '  annotations:\n    argocd.argoproj.io/sync-wave: "1"\n' if app.spec.migrations else ""
    return (
        head
        + f"""metadata:
  name: {n}
{wave}  labels:
    app.kubernetes.io/name: {n}
    app.kubernetes.io/part-of: {team}
spec:
  replicas: 2
  revisionHistoryLimit: 5
{strategy}  selector:
    matchLabels:
      app.kubernetes.io/name: {n}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {n}
        app.kubernetes.io/part-of: {team}
    spec:
      terminationGracePeriodSeconds: 30
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              app.kubernetes.io/name: {n}
      containers:
        - name: {n}
          image: {REGISTRY}/{n}
          ports:
            - name: http
              containerPort: 8080
          envFrom:
            - configMapRef:
                name: {n}-config
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
            failureThreshold: 3
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            initialDelaySeconds: 10
            periodSeconds: 10
          lifecycle:
            preStop:
              exec:
                command: ["sleep", "5"]
          resources:
            requests:
              cpu: {app.cpu_m}m
              memory: {app.memory_mi // 2}Mi
            limits:
              memory: {app.memory_mi}Mi
"""
    )


def render_service(app: AppState) -> str:
    n = app.spec.name
    wave = '  annotations:\n    argocd.argoproj.io/sync-wave: "-1"\n' if app.spec.migrations else ""
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {n}
{wave}  labels:
    app.kubernetes.io/name: {n}
spec:
  type: ClusterIP
  selector:
    app.kubernetes.io/name: {n}
  ports:
    - name: http
      port: 80
      targetPort: http
"""


def render_pdb(app: AppState) -> str:
    n = app.spec.name
    return f"""apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {n}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {n}
"""


def render_migration_job(app: AppState) -> str:
    """A PreSync hook: Argo CD runs it before the sync waves and deletes it once it succeeded."""
    n = app.spec.name
    return f"""apiVersion: batch/v1
kind: Job
metadata:
  name: {n}-migrate
  annotations:
    argocd.argoproj.io/hook: PreSync
    argocd.argoproj.io/hook-delete-policy: BeforeHookCreation,HookSucceeded
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: {REGISTRY}/{n}
          command: ["/app/migrate", "up"]
          envFrom:
            - configMapRef:
                name: {n}-config
"""


def render_base_kustomization(app: AppState) -> str:
    n = app.spec.name
    hook = "  - migration-job.yaml\n" if app.spec.migrations else ""
    return f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {workload_file(app.spec)}
  - service.yaml
  - pdb.yaml
{hook}configMapGenerator:
  - name: {n}-config
    literals:
      - PORT=8080
      - LOG_LEVEL=info
"""


def render_env_kustomization(app: AppState, env: str) -> str:
    n, team = app.spec.name, app.spec.team
    st = app.envs[env]
    if app.spec.uses_digest:
        pin = f"    digest: {digest_of(n, st.version)}\n"
    else:
        pin = f'    newTag: "{tag_of(st.version)}"\n'
    literals = [f"      - LOG_LEVEL={st.log_level}"]
    literals += [f"      - {k}={'true' if v else 'false'}" for k, v in sorted(st.flags.items())]
    text = (
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"namespace: {team}-{n}\n"
        "resources:\n"
        f"  - ../../../apps/{n}/base\n"
        "labels:\n"
        "  - pairs:\n"
        f"      env: {env}\n"
        "    includeSelectors: false\n"
        "images:\n"
        f"  - name: {REGISTRY}/{n}\n"
        f"{pin}"
        "configMapGenerator:\n"
        f"  - name: {n}-config\n"
        "    behavior: merge\n"
        "    literals:\n" + "\n".join(literals) + "\n"
    )
    if env == "prod":
        text += (
            "patches:\n"
            "  - target:\n"
            "      kind: Deployment\n"
            f"      name: {n}\n"
            "    patch: |-\n"
            "      - op: replace\n"
            "        path: /spec/replicas\n"
            f"        value: {st.replicas}\n"
        )
    return text


def render_helm_values(app: AppState, env: str) -> str:
    """``environments/<env>/<app>/values.yaml`` of a Helm-values app (the chart reads only these keys)."""
    st = app.envs[env]
    flags = ",".join(f"{k}={'true' if v else 'false'}" for k, v in sorted(st.flags.items()))
    return (
        f"# {app.spec.name} in {env}: values for the chart in apps/{app.spec.name}/chart\n"
        f"team: {app.spec.team}\n"
        "image:\n"
        f"  repository: {REGISTRY}/{app.spec.name}\n"
        f'  tag: "{tag_of(st.version)}"\n'
        f"replicaCount: {st.replicas}\n"
        "config:\n"
        f"  logLevel: {st.log_level}\n"
        f'  featureFlags: "{flags}"\n'
    )


def render_chart(app: AppState) -> dict[str, str]:
    """A small chart whose templates use plain ``{{ .Values.x.y }}`` substitutions only."""
    n, team = app.spec.name, app.spec.team
    chart = f"apps/{n}/chart"
    return {
        f"{chart}/Chart.yaml": (
            f"apiVersion: v2\nname: {n}\ndescription: {n} ({team} team)\ntype: application\n"
            'version: 0.1.0\nappVersion: "1.0"\n'
        ),
        f"{chart}/values.yaml": (
            f"image:\n  repository: {REGISTRY}/{n}\n  tag: latest\nreplicaCount: 1\n"
            f'config:\n  logLevel: info\n  featureFlags: ""\n'
            f"resources:\n  cpu: {app.cpu_m}m\n  memory: {app.memory_mi}Mi\n"
        ),
        f"{chart}/templates/configmap.yaml": f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: {n}-config
  annotations:
    argocd.argoproj.io/sync-wave: "-1"
data:
  LOG_LEVEL: "{{{{ .Values.config.logLevel }}}}"
  FEATURE_FLAGS: "{{{{ .Values.config.featureFlags }}}}"
""",
        f"{chart}/templates/deployment.yaml": f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {n}
  labels:
    app.kubernetes.io/name: {n}
    app.kubernetes.io/part-of: "{{{{ .Values.team }}}}"
spec:
  replicas: {{{{ .Values.replicaCount }}}}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      app.kubernetes.io/name: {n}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {n}
    spec:
      terminationGracePeriodSeconds: 30
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              app.kubernetes.io/name: {n}
      containers:
        - name: {n}
          image: "{{{{ .Values.image.repository }}}}:{{{{ .Values.image.tag }}}}"
          ports:
            - name: http
              containerPort: 8080
          envFrom:
            - configMapRef:
                name: {n}-config
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
          lifecycle:
            preStop:
              exec:
                command: ["sleep", "5"]
          resources:
            requests:
              cpu: "{{{{ .Values.resources.cpu }}}}"
              memory: "{{{{ .Values.resources.memory }}}}"
            limits:
              memory: "{{{{ .Values.resources.memory }}}}"
""",
        f"{chart}/templates/service.yaml": render_service(app),
        f"{chart}/templates/pdb.yaml": render_pdb(app),
    }


def render_cluster(cluster: ClusterSpec) -> str:
    storage = "gp3" if cluster.region.startswith(("us", "ca", "sa")) else "premium-rwo"
    return f"""# Cluster wiring; labels feed the ApplicationSet cluster generator.
name: {cluster.name}
server: {cluster.server}
labels:
  env: {cluster.env}
  region: {cluster.region}
  tier: {cluster.tier}
ingressClass: nginx
storageClass: {storage}
"""


def render_readme(apps: Sequence[AppSpec], clusters: Sequence[ClusterSpec]) -> str:
    return (
        "# acme GitOps\n\n"
        "Desired state for every service, one overlay per environment (`environments/<env>/<app>`).\n"
        "Promote by pull request: copy the image tag from the lower environment.\n\n"
        f"Services: {len(apps)}. Clusters: {len(clusters)}.\n"
    )


# ---------------------------------------------------------------------------------------------------
# Parsers shared with the Argo CD emulator (it must understand the files this module writes, and the
# portal's promotion edits of them). Line-based on purpose: fast, and tolerant of quoting styles.

_KEY_RE = re.compile(r"^(\s*)(-\s+)?([A-Za-z][\w.-]*):\s*(.*?)\s*$")


def _unquote(value: str) -> str:
    value = value.split(" #", 1)[0].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


@dataclass(frozen=True)
class Kustomization:
    images: tuple[KustomizeImage, ...] = ()
    replicas: int | None = None
    namespace: str = ""
    literals: tuple[str, ...] = ()


def parse_kustomization(text: str) -> Kustomization:
    """Extract images, namespace, replicas (patch or ``replicas:`` field) and generator literals."""
    images: list[dict[str, str]] = []
    literals: list[str] = []
    replicas: int | None = None
    namespace = ""
    section = ""
    in_literals = False
    expect_replicas_value = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        # Top-level key; "- item" at column 0 is an indentless sequence item of the current key.
        if indent == 0 and not line.startswith("-"):
            section = line.split(":", 1)[0]
            in_literals = False
            if section == "namespace":
                namespace = _unquote(line.split(":", 1)[1])
            continue
        m = _KEY_RE.match(line)
        stripped = line.strip()
        if section == "images" and m:
            _, dash, key, value = m.groups()
            if dash or not images:
                images.append({})
            images[-1][key] = _unquote(value)
        elif section == "configMapGenerator":
            if m and m.group(3) == "literals":
                in_literals = True
            elif in_literals and stripped.startswith("- ") and not m:
                literals.append(_unquote(stripped[2:]))
            elif m:
                in_literals = False
        elif section in ("patches", "patchesJson6902"):
            if "/spec/replicas" in stripped:
                expect_replicas_value = True
            elif expect_replicas_value and stripped.startswith("value:"):
                replicas = int(_unquote(stripped.split(":", 1)[1]))
                expect_replicas_value = False
        elif section == "replicas" and m and m.group(3) == "count":
            replicas = int(_unquote(m.group(4)))
    parsed = tuple(
        KustomizeImage(
            name=i.get("name", ""),
            new_name=i.get("newName", ""),
            new_tag=i.get("newTag", ""),
            digest=i.get("digest", ""),
        )
        for i in images
        if i.get("name")
    )
    return Kustomization(images=parsed, replicas=replicas, namespace=namespace, literals=tuple(literals))


def parse_helm_values(text: str, app: str = "") -> Kustomization:
    """Read a Helm-values app's pins as a Kustomization: ``image.repository``/``tag``/``digest``,
    ``replicaCount`` and the namespace ``<team>-<app>`` from ``team`` (the keys this module's charts
    read; two levels of plain YAML)."""
    section = ""
    team = ""
    image: dict[str, str] = {}
    replicas: int | None = None
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.strip().partition(":")
        if not line.startswith(" "):
            section = key
            if key == "replicaCount" and _unquote(value).isdigit():
                replicas = int(_unquote(value))
            elif key == "team":
                team = _unquote(value)
        elif section == "image":
            image[key] = _unquote(value)
    images: tuple[KustomizeImage, ...] = ()
    if image.get("repository"):
        images = (
            KustomizeImage(
                name=image["repository"], new_tag=image.get("tag", ""), digest=image.get("digest", "")
            ),
        )
    namespace = f"{team}-{app}" if team and app else ""
    return Kustomization(images=images, replicas=replicas, namespace=namespace)


def parse_cluster_file(text: str) -> dict[str, object]:
    """Parse clusters/<name>/cluster.yaml (flat keys plus one ``labels:`` map)."""
    out: dict[str, object] = {}
    labels: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        key, _, value = raw.strip().partition(":")
        if raw[0] != " ":
            section = key
            if value.strip():
                out[key] = _unquote(value)
        elif section == "labels":
            labels[key] = _unquote(value)
    out["labels"] = labels
    return out


# ---------------------------------------------------------------------------------------------------
# History generation.


class _FastImport:
    """Streams commits into ``git fast-import`` and can ask it for a commit's SHA (``get-mark``)."""

    def __init__(self, repo: Path) -> None:
        self._proc = subprocess.Popen(
            ["git", "-C", str(repo), "fast-import", "--quiet", "--done", "--cat-blob-fd=1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in: IO[bytes] = self._proc.stdin
        self._out: IO[bytes] = self._proc.stdout
        self._mark = 0
        self._tags: list[tuple[str, int]] = []

    def commit(
        self,
        *,
        author: Author,
        committer: Author,
        when: int,
        commit_when: int,
        message: str,
        files: dict[str, str],
        parent: Handle | None,
        merge: Handle | None = None,
    ) -> Handle:
        self._mark += 1
        msg = message.encode()
        chunks = [
            b"commit refs/heads/main\n",
            b"mark :%d\n" % self._mark,
            f"author {author[0]} <{author[1]}> {when} {author[2]}\n".encode(),
            f"committer {committer[0]} <{committer[1]}> {commit_when} {committer[2]}\n".encode(),
            b"data %d\n" % len(msg),
            msg,
            b"\n",
        ]
        if parent is not None:
            chunks.append(b"from :%d\n" % int(parent))
        if merge is not None:
            chunks.append(b"merge :%d\n" % int(merge))
        for path, content in files.items():
            data = content.encode()
            chunks += [f"M 100644 inline {path}\n".encode(), b"data %d\n" % len(data), data, b"\n"]
        self._in.write(b"".join(chunks))
        return self._mark

    def sha_of(self, mark: Handle) -> str:
        self._in.write(b"get-mark :%d\n" % int(mark))
        self._in.flush()
        return self._out.readline().decode().strip()

    def tag(self, name: str, mark: Handle, tagger: Author, when: int, message: str) -> None:
        msg = message.encode()
        self._in.write(
            f"tag {name}\nfrom :{mark}\ntagger {tagger[0]} <{tagger[1]}> {when} {tagger[2]}\n".encode()
            + b"data %d\n" % len(msg)
            + msg
            + b"\n"
        )

    def finish(self) -> None:
        try:
            self._in.write(b"done\n")
            self._in.close()
        except BrokenPipeError:
            pass  # fast-import died early; its stderr below says why
        stderr = self._proc.stderr.read() if self._proc.stderr else b""
        if self._proc.wait() != 0:
            raise RuntimeError(f"git fast-import failed: {stderr.decode(errors='replace')}")


Handle = int | str  # a fast-import mark or a commit SHA


class _Sink(Protocol):
    def commit(
        self,
        *,
        author: Author,
        committer: Author,
        when: int,
        commit_when: int,
        message: str,
        files: dict[str, str],
        parent: Handle | None,
        merge: Handle | None = None,
    ) -> Handle: ...

    def sha_of(self, handle: Handle) -> str: ...

    def tag(self, name: str, handle: Handle, tagger: Author, when: int, message: str) -> None: ...

    def finish(self) -> None: ...


_OBJ_COMMIT, _OBJ_TREE, _OBJ_BLOB, _OBJ_TAG, _OBJ_OFS_DELTA = 1, 2, 3, 4, 6
_MAX_DELTA_DEPTH = 50  # like git's default pack.depth: bounds the cost of reading a tree back


class _Dir:
    """One directory of the in-memory tree, kept in git order with cached byte offsets so that
    replacing one entry (the usual commit) yields an O(1) delta against the previous version."""

    __slots__ = ("changed", "data", "index", "offsets", "parts", "pending", "sha")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.parts: list[bytes] = []
        self.offsets: list[int] = []
        self.pending: dict[str, bytes] = {}  # entries whose position is not known yet
        self.changed: set[int] = set()
        self.sha = b""
        self.data = b""

    def set(self, name: str, entry: bytes) -> None:
        i = self.index.get(name)
        if i is None or len(entry) != len(self.parts[i]):
            self.pending[name] = entry
        else:
            self.parts[i] = entry
            self.changed.add(i)

    def serialize(self) -> tuple[bytes, tuple[int, int] | None]:
        """The tree body, plus (offset, length) of the only changed entry when that is all that moved."""
        hint = None
        if not self.pending and len(self.changed) == 1 and self.data:
            # Splice the one changed entry into the previous body: cheaper than joining every part.
            i = next(iter(self.changed))
            start, end = self.offsets[i], self.offsets[i + 1]
            self.changed.clear()
            return self.data[:start] + self.parts[i] + self.data[end:], (start, end - start)
        if self.pending:
            entries = {n: self.parts[i] for n, i in self.index.items()} | self.pending
            # git orders entries by name, directories compared as if they ended in "/".
            names = sorted(entries, key=lambda n: n + "/" if entries[n][:1] == b"4" else n)
            self.parts = [entries[n] for n in names]
            self.index = {n: i for i, n in enumerate(names)}
            self.offsets = [0, *itertools.accumulate(len(p) for p in self.parts)]
            self.pending.clear()
        elif len(self.changed) == 1:
            i = next(iter(self.changed))
            hint = (self.offsets[i], len(self.parts[i]))
        self.changed.clear()
        return b"".join(self.parts), hint


class _PackWriter:
    """Writes the history as one packfile + v2 index directly, without a git process per commit.

    Why not only fast-import: it re-formats and re-sorts every rewritten tree, about 1 ms of CPU per
    commit when ``environments/<env>`` holds 2,000 apps. Here each new version of a directory is
    stored as a tiny delta (copy prefix, insert the changed entry, copy suffix) against its previous
    version. The tests check the result with ``git fsck`` and against the fast-import backend.
    """

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        pack_dir = repo / "objects" / "pack"
        pack_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = pack_dir / "tmp-sandbox.pack"
        self.out = open(self.tmp, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in finish()
        self.out.write(b"PACK" + struct.pack(">II", 2, 0))  # object count patched in finish()
        self.offset = 12
        self.objects: dict[bytes, tuple[int, int]] = {}  # sha -> (offset, crc32)
        self.depth: dict[bytes, int] = {}
        self.dirs: dict[str, _Dir] = {"": _Dir()}
        self.refs: list[tuple[str, str]] = []
        self.head = ""

    def _store(
        self, kind: int, data: bytes, base: _Dir | None = None, hint: tuple[int, int] | None = None
    ) -> bytes:
        hasher = hashlib.sha1(b"%s %d\0" % (_TYPE_NAMES[kind], len(data)))
        hasher.update(data)  # no concatenation: big trees would be copied once more
        sha = hasher.digest()
        if sha in self.objects:
            return sha
        delta = None
        if base is not None and base.sha in self.objects and self.depth.get(base.sha, 0) < _MAX_DELTA_DEPTH:
            delta = _make_delta(base.data, data, hint)
        if delta is not None and base is not None:
            raw = _obj_header(_OBJ_OFS_DELTA, len(delta)) + _ofs(self.offset - self.objects[base.sha][0])
            raw += _deflate(delta)
            self.depth[sha] = self.depth.get(base.sha, 0) + 1
        else:
            raw = _obj_header(kind, len(data)) + _deflate(data)
        self.objects[sha] = (self.offset, zlib.crc32(raw))
        self.out.write(raw)
        self.offset += len(raw)
        return sha

    def _write_tree(self, node: _Dir) -> bytes:
        data, hint = node.serialize()
        sha = self._store(_OBJ_TREE, data, node if node.data else None, hint)
        node.sha, node.data = sha, data
        return sha

    def commit(
        self,
        *,
        author: Author,
        committer: Author,
        when: int,
        commit_when: int,
        message: str,
        files: dict[str, str],
        parent: Handle | None,
        merge: Handle | None = None,
    ) -> Handle:
        dirty: set[str] = set()
        for path, content in files.items():
            blob = self._store(_OBJ_BLOB, content.encode())
            parent_dir, _, name = path.rpartition("/")
            self._ensure_dir(parent_dir, dirty)
            self.dirs[parent_dir].set(name, b"100644 " + name.encode() + b"\0" + blob)
        # Deepest directories first, the root last.
        for d in sorted(dirty, key=lambda p: (-(p.count("/") + 1 if p else 0), p)):
            sha = self._write_tree(self.dirs[d])
            if d:
                up, _, name = d.rpartition("/")
                self.dirs[up].set(name, b"40000 " + name.encode() + b"\0" + sha)
        lines = [f"tree {self.dirs[''].sha.hex()}"]
        lines += [f"parent {p}" for p in (parent, merge) if p is not None]
        lines.append(f"author {author[0]} <{author[1]}> {when} {author[2]}")
        lines.append(f"committer {committer[0]} <{committer[1]}> {commit_when} {committer[2]}")
        body = ("\n".join(lines) + "\n\n" + message).encode()
        self.head = self._store(_OBJ_COMMIT, body).hex()
        return self.head

    def _ensure_dir(self, path: str, dirty: set[str]) -> None:
        # Every ancestor of a changed file is rewritten (and created on first use).
        while True:
            self.dirs.setdefault(path, _Dir())
            dirty.add(path)
            if not path:
                return
            path = path.rpartition("/")[0]

    def sha_of(self, handle: Handle) -> str:
        return str(handle)

    def tag(self, name: str, handle: Handle, tagger: Author, when: int, message: str) -> None:
        body = (
            f"object {handle}\ntype commit\ntag {name}\n"
            f"tagger {tagger[0]} <{tagger[1]}> {when} {tagger[2]}\n\n{message}"
        ).encode()
        self.refs.append((f"refs/tags/{name}", self._store(_OBJ_TAG, body).hex()))

    def finish(self) -> None:
        self.out.seek(8)
        self.out.write(struct.pack(">I", len(self.objects)))
        self.out.close()
        digest = hashlib.sha1()
        with open(self.tmp, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        checksum = digest.digest()
        with open(self.tmp, "ab") as fh:
            fh.write(checksum)
        name = self.repo / "objects" / "pack" / f"pack-{checksum.hex()}"
        name.with_suffix(".idx").write_bytes(_pack_index(self.objects, checksum))
        self.tmp.rename(name.with_suffix(".pack"))
        refs = [*self.refs, ("refs/heads/main", self.head)] if self.head else self.refs
        stdin = "".join(f"update {ref} {sha}\n" for ref, sha in refs).encode()
        subprocess.run(["git", "-C", str(self.repo), "update-ref", "--stdin"], input=stdin, check=True)


_TYPE_NAMES = {_OBJ_COMMIT: b"commit", _OBJ_TREE: b"tree", _OBJ_BLOB: b"blob", _OBJ_TAG: b"tag"}


def _deflate(data: bytes) -> bytes:
    # A small window and hash table: zlib's default setup allocates and clears ~256 KB per call,
    # which dominated the run time for the many tiny blobs and deltas.
    bits = max(9, min(15, len(data).bit_length() + 1))
    z = zlib.compressobj(1, zlib.DEFLATED, bits, 2 if len(data) < 4096 else 8)
    return z.compress(data) + z.flush()


def _obj_header(kind: int, size: int) -> bytes:
    out = bytearray([(kind << 4) | (size & 0x0F)])
    size >>= 4
    while size:
        out[-1] |= 0x80
        out.append(size & 0x7F)
        size >>= 7
    return bytes(out)


def _ofs(distance: int) -> bytes:
    """OFS_DELTA base distance: big-endian base-128 with the "+1 per continuation" twist."""
    out = [distance & 0x7F]
    distance >>= 7
    while distance:
        distance -= 1
        out.append(0x80 | (distance & 0x7F))
        distance >>= 7
    return bytes(reversed(out))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _copy_op(offset: int, size: int) -> bytes:
    ops = bytearray()
    while size:
        chunk = min(size, 0xFFFFFF)
        cmd, args = 0x80, bytearray()
        for i in range(4):
            if (offset >> (8 * i)) & 0xFF:
                cmd |= 1 << i
                args.append((offset >> (8 * i)) & 0xFF)
        for i in range(3):
            if (chunk >> (8 * i)) & 0xFF:
                cmd |= 1 << (4 + i)
                args.append((chunk >> (8 * i)) & 0xFF)
        ops.append(cmd)
        ops += args
        offset += chunk
        size -= chunk
    return bytes(ops)


def _make_delta(src: bytes, dst: bytes, hint: tuple[int, int] | None) -> bytes | None:
    """git delta from ``src`` to ``dst``: copy the common prefix and suffix, insert the middle.

    ``hint`` names the one changed entry (offset, length) when the caller knows it; otherwise the
    changed span of two equal-length versions is found with one big-integer XOR. Returns None when
    a delta is not worth computing (sizes differ: a full object is written instead)."""
    if len(src) != len(dst):
        return None
    if hint is not None:
        prefix, suffix = hint[0], len(dst) - hint[0] - hint[1]
    else:
        diff = int.from_bytes(src, "big") ^ int.from_bytes(dst, "big")
        prefix = len(dst) - (diff.bit_length() + 7) // 8
        suffix = ((diff & -diff).bit_length() - 1) // 8 if diff else len(dst) - prefix
    out = bytearray(_varint(len(src)) + _varint(len(dst)))
    if prefix:
        out += _copy_op(0, prefix)
    middle = dst[prefix : len(dst) - suffix]
    for i in range(0, len(middle), 127):
        piece = middle[i : i + 127]
        out.append(len(piece))
        out += piece
    if suffix:
        out += _copy_op(len(src) - suffix, suffix)
    return bytes(out)


def _pack_index(objects: dict[bytes, tuple[int, int]], checksum: bytes) -> bytes:
    """Pack index version 2: fan-out, sorted names, CRC32s, offsets (+ 64-bit table), checksums."""
    names = sorted(objects)
    fanout = [0] * 256
    for sha in names:
        fanout[sha[0]] += 1
    for i in range(1, 256):
        fanout[i] += fanout[i - 1]
    small: list[int] = []
    large: list[int] = []
    for sha in names:
        offset = objects[sha][0]
        if offset < 0x80000000:
            small.append(offset)
        else:
            small.append(0x80000000 | len(large))
            large.append(offset)
    body = b"".join(
        [
            b"\377tOc" + struct.pack(">I", 2),
            struct.pack(">256I", *fanout),
            b"".join(names),
            struct.pack(f">{len(names)}I", *(objects[n][1] for n in names)),
            struct.pack(f">{len(small)}I", *small),
            struct.pack(f">{len(large)}Q", *large),
            checksum,
        ]
    )
    return body + hashlib.sha1(body).digest()


@dataclass
class _Change:
    """One logical change: a message, an author and the files it rewrites."""

    author: Author
    message: str
    files: dict[str, str]
    kind: str  # ci | promote-stage | promote-prod | config | base | revertable | revert
    undo: dict[str, str] | None = None  # for "revertable": the content its revert restores


class _HistoryBuilder:
    def __init__(
        self,
        rng: random.Random,
        apps: list[AppState],
        clusters: list[ClusterSpec],
        envs: tuple[str, ...],
    ) -> None:
        self.rng = rng
        self.apps = apps
        self.clusters = clusters
        self.envs = envs
        self.pr_number = 100
        self.low, self.mid, self.top = envs[0], envs[min(1, len(envs) - 1)], envs[-1]

    # -- helpers ---------------------------------------------------------------------------------
    def human(self) -> Author:
        return self.rng.choice(HUMANS)

    def env_file(self, app: AppState, env: str) -> dict[str, str]:
        if app.spec.source == "helm":
            return {f"environments/{env}/{app.spec.name}/values.yaml": render_helm_values(app, env)}
        return {f"environments/{env}/{app.spec.name}/kustomization.yaml": render_env_kustomization(app, env)}

    def bump(self, version: tuple[int, int, int]) -> tuple[int, int, int]:
        r = self.rng.random()
        if r < 0.02:
            return (version[0] + 1, 0, 0)
        if r < 0.2:
            return (version[0], version[1] + 1, 0)
        return (version[0], version[1], version[2] + 1)

    # -- change kinds ----------------------------------------------------------------------------
    def bootstrap_files(self) -> dict[str, str]:
        files: dict[str, str] = {"README.md": render_readme([a.spec for a in self.apps], self.clusters)}
        for c in self.clusters:
            files[f"clusters/{c.name}/cluster.yaml"] = render_cluster(c)
        for a in self.apps:
            files.update(self.base_files(a))
            for env in self.envs:
                files.update(self.env_file(a, env))
        return files

    def base_files(self, a: AppState) -> dict[str, str]:
        if a.spec.source == "helm":
            return render_chart(a)
        base = f"apps/{a.spec.name}/base"
        files = {
            f"{base}/{workload_file(a.spec)}": render_deployment(a),
            f"{base}/service.yaml": render_service(a),
            f"{base}/pdb.yaml": render_pdb(a),
            f"{base}/kustomization.yaml": render_base_kustomization(a),
        }
        if a.spec.migrations:
            files[f"{base}/migration-job.yaml"] = render_migration_job(a)
        return files

    def ci_bump(self, app: AppState) -> _Change:
        st = app.envs[self.low]
        st.version = self.bump(st.version)
        label = image_ref_label(app.spec, st.version)
        build = self.rng.getrandbits(28)
        message = (
            f"Bump {app.spec.name} to {label} in {self.low}\n\n"
            f"Image: {REGISTRY}/{app.spec.name}:{tag_of(st.version)}\n"
            f"Built from acme/{app.spec.name}@{build:07x}\n"
        )
        return _Change(CI_BOT, message, self.env_file(app, self.low), "ci")

    def promote(self, app: AppState, src: str, dst: str) -> _Change:
        app.envs[dst].version = app.envs[src].version
        label = image_ref_label(app.spec, app.envs[dst].version)
        return _Change(
            self.human(),
            f"Promote {app.spec.name} {label} to {dst}\n",
            self.env_file(app, dst),
            "promote-prod" if dst == self.top else "promote-stage",
        )

    def config_change(self, app: AppState) -> _Change:
        env = self.rng.choice(self.envs)
        st = app.envs[env]
        r = self.rng.random()
        n = app.spec.name
        if env == "prod" and r < 0.4:
            st.replicas = max(2, st.replicas + self.rng.choice((-1, 1, 1, 2)))
            msg = f"Scale {n} to {st.replicas} replicas in {env}\n"
        elif r < 0.7:
            flag = self.rng.choice(FEATURE_FLAGS)
            st.flags[flag] = not st.flags.get(flag, False)
            msg = f"{'Enable' if st.flags[flag] else 'Disable'} {flag} for {n} in {env}\n"
        else:
            st.log_level = self.rng.choice([lvl for lvl in LOG_LEVELS if lvl != st.log_level])
            msg = f"Set LOG_LEVEL={st.log_level} for {n} in {env}\n"
        return _Change(self.human(), msg, self.env_file(app, env), "config")

    def base_change(self, app: AppState) -> _Change:
        if self.rng.random() < 0.5:
            app.memory_mi += 128
            msg = f"Raise {app.spec.name} memory limit to {app.memory_mi}Mi\n"
        else:
            app.cpu_m += 50
            msg = f"Raise {app.spec.name} CPU request to {app.cpu_m}m\n"
        if app.spec.source == "helm":
            path = f"apps/{app.spec.name}/chart/values.yaml"
            return _Change(self.human(), msg, {path: render_chart(app)[path]}, "base")
        path = f"apps/{app.spec.name}/base/{workload_file(app.spec)}"
        return _Change(self.human(), msg, {path: render_deployment(app)}, "base")

    def random_change(self) -> _Change:
        app = self.rng.choice(self.apps)
        r = self.rng.random()
        if r < 0.55:
            return self.ci_bump(app)
        if r < 0.72:
            if app.envs[self.mid].version != app.envs[self.low].version:
                return self.promote(app, self.low, self.mid)
            return self.ci_bump(app)
        if r < 0.84:
            if app.envs[self.top].version != app.envs[self.mid].version:
                return self.promote(app, self.mid, self.top)
            return self.ci_bump(app)
        if r < 0.96:
            return self.config_change(app)
        return self.base_change(app)

    def shaping_changes(self, app: AppState) -> Iterable[_Change]:
        """Steer one app's final state: prod one build behind stage, stage usually == dev."""
        low, mid, top = (app.envs[e].version for e in (self.low, self.mid, self.top))
        if top == mid:
            if low == mid:
                yield self.ci_bump(app)
            yield self.promote(app, self.low, self.mid)
        elif low != mid and self.rng.random() < 0.6:
            yield self.promote(app, self.low, self.mid)


def _make_apps(rng: random.Random, count: int) -> list[AppSpec]:
    team_count = max(1, min(len(TEAMS), (count + 1) // 2))
    teams = TEAMS[:team_count]
    pools = {t: list(TEAM_SERVICES[t]) for t in teams}
    for pool in pools.values():
        rng.shuffle(pool)
    specs: list[AppSpec] = []
    for i in range(count):
        team = teams[i % team_count]
        pool = pools[team]
        k = i // team_count
        base = pool[k % len(pool)]
        name = base if k < len(pool) else f"{base}-{k // len(pool) + 1}"
        # Every fourth app runs a PreSync migration (no random draw: the history stays as it was).
        specs.append(AppSpec(name=name, team=team, uses_digest=rng.random() < 0.2, migrations=i % 4 == 0))
    return specs


def _with_extras(specs: list[AppSpec], *, helm_apps: int, rollout_apps: int) -> list[AppSpec]:
    """Turn the last ``rollout_apps`` kustomize apps into Rollouts and add ``helm_apps`` Helm-values
    apps (options, off by default: counts and kinds that tests rely on stay as they were)."""
    out = list(specs)
    for i in range(max(0, len(out) - rollout_apps), len(out)):
        out[i] = replace(out[i], workload="Rollout")
    teams = sorted({s.team for s in specs}, key=[s.team for s in specs].index)
    for i in range(helm_apps):
        team = teams[i % len(teams)]
        out.append(AppSpec(name=f"{team}-{HELM_SERVICES[i % len(HELM_SERVICES)]}", team=team, source="helm"))
    return out


def _make_clusters(envs: Sequence[str], per_env: int) -> list[ClusterSpec]:
    clusters = []
    for env in envs:
        for i in range(per_env):
            region = REGIONS[i % len(REGIONS)]
            if i >= len(REGIONS):
                region = f"{region}-{i // len(REGIONS) + 1}"
            tier = ENV_TIERS.get(env, "bronze")
            if env == "prod" and i > 0:
                tier = "silver"  # one gold (primary) prod cluster, the rest are secondary regions
            clusters.append(ClusterSpec(name=f"{env}-{region}", env=env, region=region, tier=tier))
    return clusters


def _initial_state(rng: random.Random, spec: AppSpec, envs: tuple[str, ...]) -> AppState:
    current = (rng.randint(1, 3), rng.randint(0, 20), rng.randint(1, 12))
    previous = (current[0], current[1], current[2] - 1)
    states = {}
    for env in envs:
        # Start with prod one build behind the lower environments: there is always something to promote.
        version = previous if env == envs[-1] and len(envs) > 1 else current
        states[env] = EnvState(version=version, replicas=3 if env == "prod" else 1)
    return AppState(spec=spec, envs=states, memory_mi=rng.choice((256, 384, 512)), cpu_m=100)


def _parse_end(end: str | datetime) -> datetime:
    if isinstance(end, datetime):
        return end if end.tzinfo else end.replace(tzinfo=UTC)
    return datetime.fromisoformat(end.replace("Z", "+00:00"))


def generate_repo(
    path: str | Path,
    *,
    apps: int = 8,
    clusters: int = 2,
    commits: int = 300,
    seed: int = 1,
    envs: Sequence[str] = ("dev", "stage", "prod"),
    end: str | datetime = DEFAULT_END,
    force: bool = False,
    backend: str = "pack",
    helm_apps: int = 0,
    rollout_apps: int = 0,
) -> GeneratedRepo:
    """Write a bare git repo at ``path`` with ``commits`` commits of deterministic GitOps history.

    ``backend="pack"`` writes the packfile directly (fast at any size); ``"fast-import"`` streams the
    same objects through ``git fast-import`` (reference implementation: both give identical SHAs).
    ``helm_apps`` adds Helm-values apps and ``rollout_apps`` makes the last kustomize apps Argo Rollouts
    (both for the demo; the default repository is unchanged by them).
    """
    if backend not in ("pack", "fast-import"):
        raise ValueError(f"unknown backend {backend!r}")
    if apps < 1 or clusters < 1 or commits < 1 or not envs:
        raise ValueError("apps, clusters, commits and envs must be positive")
    repo = Path(path)
    if repo.exists() and any(repo.iterdir()):
        if not force:
            raise FileExistsError(f"{repo} exists and is not empty (use force=True)")
        shutil.rmtree(repo)
    repo.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "--bare", "--quiet", "-b", "main", str(repo)], check=True)

    env_tuple = tuple(envs)
    rng = random.Random(seed)
    app_specs = _with_extras(_make_apps(rng, apps), helm_apps=helm_apps, rollout_apps=rollout_apps)
    cluster_specs = _make_clusters(env_tuple, clusters)
    states = [_initial_state(rng, s, env_tuple) for s in app_specs]
    builder = _HistoryBuilder(rng, states, cluster_specs, env_tuple)

    end_ts = int(_parse_end(end).timestamp()) - rng.randint(5 * 60, 90 * 60)
    start_ts = end_ts - int(HISTORY_SPAN.total_seconds())
    step = (end_ts - start_ts) / max(commits - 1, 1)

    fi: _Sink = _PackWriter(repo) if backend == "pack" else _FastImport(repo)
    try:
        _write_history(fi, builder, commits, start_ts, step)
    finally:
        fi.finish()
    head_sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "refs/heads/main"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return GeneratedRepo(
        path=repo,
        head_sha=head_sha,
        apps=app_specs,
        clusters=cluster_specs,
        envs=env_tuple,
        commits=commits,
    )


def _write_history(fi: _Sink, b: _HistoryBuilder, commits: int, start_ts: int, step: float) -> Handle:
    rng = b.rng
    counter = 0

    def when(slot: int) -> int:
        # Monotonic: each commit jitters a little *before* its slot, the last slot being the end date.
        return int(start_ts + slot * step - rng.random() * min(step * 0.4, 1800))

    t0 = start_ts
    head = fi.commit(
        author=HUMANS[0],
        committer=HUMANS[0],
        when=t0,
        commit_when=t0,
        message="Bootstrap GitOps repository\n\nInitial import of services, overlays and clusters.\n",
        files=b.bootstrap_files(),
        parent=None,
    )
    counter = 1
    fi.tag("bootstrap", head, HUMANS[0], t0, "Initial import\n")

    remaining = commits - 1
    tail = min(int(remaining * 0.3), 2 * len(b.apps))
    revert_at = int(remaining * 0.7) if remaining >= 3 else -1
    main_phase = remaining - tail
    pending: list[_Change] = []
    reverted = False
    tags_written = 0
    # Lazy on purpose: each shaping step must see the state left by the previous ones.
    shaping = (c for a in rng.sample(b.apps, len(b.apps)) for c in b.shaping_changes(a))

    while counter < commits:
        left = commits - counter
        if pending:
            change = pending.pop(0)
        elif not reverted and counter - 1 >= revert_at >= 0 and left >= 2:
            # ">=": a merge advances the counter by two and may jump over the planned slot.
            reverted = True
            change = _revertable_change(b)
        elif counter - 1 >= main_phase:
            change = next(shaping, None) or b.config_change(rng.choice(b.apps))
        else:
            change = b.random_change()

        ts = when(counter)
        as_merge = change.kind == "promote-prod" and left >= 2 and rng.random() < 0.5
        if as_merge:
            head = _write_merge(fi, b, change, head, ts, when(counter + 1))
            counter += 2
        else:
            head = fi.commit(
                author=change.author,
                committer=change.author,
                when=ts,
                commit_when=ts,
                message=change.message,
                files=change.files,
                parent=head,
            )
            counter += 1
            if change.kind == "revertable":
                pending.insert(0, _revert_of(fi, b, change, head))
        if change.kind == "promote-prod" and tags_written < 25 and rng.random() < 0.05:
            tags_written += 1
            day = datetime.fromtimestamp(ts, UTC).strftime("%Y.%m.%d")
            fi.tag(f"release-{day}-{tags_written}", head, change.author, ts, f"Prod release {day}\n")
    return head


def _revertable_change(b: _HistoryBuilder) -> _Change:
    app = b.rng.choice(b.apps)
    env = b.rng.choice(b.envs)
    st = app.envs[env]
    # The file as it is now (a Helm-values app's values.yaml, else the kustomization): the revert restores it.
    before = next(iter(b.env_file(app, env).values()))
    old = st.log_level
    st.log_level = "debug" if old != "debug" else "trace"
    change = _Change(
        b.human(),
        f"Set LOG_LEVEL={st.log_level} for {app.spec.name} in {env}\n",
        b.env_file(app, env),
        "revertable",
        undo={next(iter(b.env_file(app, env))): before},
    )
    st.log_level = old  # the revert commit right after restores this content
    return change


def _revert_of(fi: _Sink, b: _HistoryBuilder, change: _Change, mark: Handle) -> _Change:
    """``git revert`` of the commit just written; its SHA (from fast-import) goes in the message."""
    assert change.undo is not None
    subject = change.message.strip()
    return _Change(
        b.human(),
        f'Revert "{subject}"\n\nThis reverts commit {fi.sha_of(mark)}.\n',
        dict(change.undo),
        "revert",
    )


def _write_merge(
    fi: _Sink, b: _HistoryBuilder, change: _Change, head: Handle, ts: int, merge_ts: int
) -> Handle:
    """A --no-ff merge of a promote/... branch carrying the same change."""
    b.pr_number += 1
    subject = change.message.strip()
    words = subject.split()
    branch = f"promote/{words[1]}-{words[2].replace(':', '-')[:19]}-{words[-1]}"
    side = fi.commit(
        author=change.author,
        committer=change.author,
        when=ts,
        commit_when=ts,
        message=f"{subject}\n",
        files=change.files,
        parent=head,
    )
    merger = b.human()
    return fi.commit(
        author=merger,
        committer=merger,
        when=merge_ts,
        commit_when=merge_ts,
        message=f"{subject}\n\nMerge branch '{branch}' (#{b.pr_number})\n",
        files=change.files,
        parent=head,
        merge=side,
    )


# ---------------------------------------------------------------------------------------------------
# Read-back helpers.


def read_current_versions(repo_path: str | Path, ref: str = "main") -> dict[str, dict[str, str]]:
    """``{app: {env: tag-or-digest}}`` as committed at ``ref`` (from environments/*/*/kustomization.yaml)."""
    repo = str(repo_path)
    listing = subprocess.run(
        ["git", "-C", repo, "ls-tree", "-r", "--name-only", ref, "--", "environments"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    names = ("/kustomization.yaml", "/values.yaml")
    paths = [p for p in listing if p.endswith(names) and p.count("/") == 3]
    blobs = cat_files(repo, [f"{ref}:{p}" for p in paths])
    out: dict[str, dict[str, str]] = {}
    for p in paths:
        _, env, app, _ = p.split("/")
        text = blobs.get(f"{ref}:{p}", "")
        k = parse_helm_values(text) if p.endswith("/values.yaml") else parse_kustomization(text)
        if k.images:
            out.setdefault(app, {})[env] = k.images[0].version
    return out


def cat_files(repo: str | Path, specs: Sequence[str]) -> dict[str, str]:
    """Read many ``<rev>:<path>`` blobs with one ``git cat-file --batch``; missing ones are skipped."""
    if not specs:
        return {}
    proc = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        input="".join(f"{s}\n" for s in specs).encode(),
        capture_output=True,
        check=True,
    )
    data = proc.stdout
    out: dict[str, str] = {}
    pos = 0
    for spec in specs:
        nl = data.index(b"\n", pos)
        header = data[pos:nl].decode()
        pos = nl + 1
        if header.endswith(" missing") or header.endswith(" ambiguous"):
            continue
        size = int(header.rsplit(" ", 1)[1])
        out[spec] = data[pos : pos + size].decode()
        pos += size + 1
    return out
