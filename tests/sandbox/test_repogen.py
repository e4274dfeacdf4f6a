"""Demo GitOps repo generator: determinism, layout, realistic history, speed."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.repogen import (
    REGISTRY,
    generate_repo,
    parse_cluster_file,
    parse_kustomization,
    read_current_versions,
)

END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def show(repo: Path, path: str, rev: str = "main") -> str:
    return git(repo, "show", f"{rev}:{path}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory):
    return generate_repo(
        tmp_path_factory.mktemp("repo") / "gitops.git", apps=12, clusters=2, commits=400, seed=7
    )


def test_same_seed_gives_same_history(tmp_path: Path) -> None:
    a = generate_repo(tmp_path / "a.git", apps=5, commits=150, seed=3)
    b = generate_repo(tmp_path / "b.git", apps=5, commits=150, seed=3)
    c = generate_repo(tmp_path / "c.git", apps=5, commits=150, seed=4)
    assert a.head_sha == b.head_sha
    assert a.head_sha != c.head_sha
    assert a.apps == b.apps


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "r.git"
    generate_repo(target, apps=2, commits=10)
    with pytest.raises(FileExistsError):
        generate_repo(target, apps=2, commits=10)
    assert generate_repo(target, apps=2, commits=12, force=True).commits == 12


def test_bare_repo_with_main_branch(repo) -> None:
    assert git(repo.path, "rev-parse", "--is-bare-repository").strip() == "true"
    assert git(repo.path, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert git(repo.path, "rev-parse", "main").strip() == repo.head_sha
    assert int(git(repo.path, "rev-list", "--count", "main")) == 400


def test_layout_matches_architecture(repo) -> None:
    files = set(git(repo.path, "ls-tree", "-r", "--name-only", "main").split())
    for app in repo.apps:
        for f in ("deployment.yaml", "service.yaml", "pdb.yaml", "kustomization.yaml"):
            assert f"apps/{app.name}/base/{f}" in files
        for env in repo.envs:
            assert f"environments/{env}/{app.name}/kustomization.yaml" in files
    assert {c.name for c in repo.clusters} == {
        f"{env}-{region}" for env in ("dev", "stage", "prod") for region in ("eu-west-1", "us-east-1")
    }
    for c in repo.clusters:
        parsed = parse_cluster_file(show(repo.path, f"clusters/{c.name}/cluster.yaml"))
        assert parsed["labels"] == {"env": c.env, "region": c.region, "tier": c.tier}
        assert parsed["server"] == c.server
    assert set(repo.teams) <= {"payments", "checkout", "platform", "search", "identity", "catalog"}


def test_deployment_has_probes_resources_and_pdb(repo) -> None:
    app = repo.apps[0].name
    deployment = show(repo.path, f"apps/{app}/base/deployment.yaml")
    for needle in ("readinessProbe:", "livenessProbe:", "resources:", "limits:", "preStop:"):
        assert needle in deployment
    assert "kind: PodDisruptionBudget" in show(repo.path, f"apps/{app}/base/pdb.yaml")
    assert "kind: Service" in show(repo.path, f"apps/{app}/base/service.yaml")


def test_overlays_pin_images_and_prod_patches_replicas(repo) -> None:
    digests = 0
    for app in repo.apps:
        for env in repo.envs:
            text = show(repo.path, f"environments/{env}/{app.name}/kustomization.yaml")
            assert f"- ../../../apps/{app.name}/base" in text
            k = parse_kustomization(text)
            assert k.images[0].name == f"{REGISTRY}/{app.name}"
            assert k.namespace == f"{app.team}-{app.name}"
            if app.uses_digest:
                assert k.images[0].digest.startswith("sha256:") and len(k.images[0].digest) == 71
            else:
                assert k.images[0].new_tag.count(".") == 2
            assert (k.replicas is not None) == (env == "prod")
        digests += app.uses_digest
    assert 0 < digests < len(repo.apps)


def test_history_has_one_revert_merges_and_several_authors(repo) -> None:
    log = git(repo.path, "log", "--format=%H%x00%an%x00%s%x00%P%x00%b%x01", "main").split("\x01")
    commits = [c.strip("\n").split("\x00") for c in log if c.strip()]
    reverts = [c for c in commits if c[2].startswith('Revert "')]
    assert len(reverts) == 1
    reverted_sha = reverts[0][4].split("This reverts commit ")[1].split(".")[0]
    reverted_subject = git(repo.path, "show", "-s", "--format=%s", reverted_sha).strip()
    assert reverts[0][2] == f'Revert "{reverted_subject}"'
    # The revert restores exactly the content before the reverted commit.
    changed = git(repo.path, "diff-tree", "--no-commit-id", "--name-only", "-r", reverted_sha).split()
    assert len(changed) == 1
    assert show(repo.path, changed[0], reverts[0][0]) == show(repo.path, changed[0], f"{reverted_sha}^")

    merges = [c for c in commits if len(c[3].split()) == 2]
    assert merges and all(c[2].startswith("Promote ") and c[2].endswith(" to prod") for c in merges)
    assert "promote/" in git(repo.path, "show", "-s", "--format=%b", merges[0][0])
    authors = {c[1] for c in commits}
    assert "ci-bot" in authors and len(authors) >= 5
    ci_subjects = {c[2].split()[0] for c in commits if c[1] == "ci-bot"}
    assert ci_subjects == {"Bump"}
    assert any(c[2].startswith("Scale ") or c[2].startswith("Set LOG_LEVEL") for c in commits)


@pytest.mark.parametrize("seed", range(1, 13))
def test_every_seed_has_exactly_one_revert(tmp_path: Path, seed: int) -> None:
    result = generate_repo(tmp_path / "r.git", apps=3, commits=40, seed=seed)
    subjects = git(result.path, "log", "--format=%s", "main").splitlines()
    assert sum(s.startswith('Revert "') for s in subjects) == 1
    assert len(subjects) == 40


def test_dates_span_six_months_before_end(repo) -> None:
    stamps = [int(s) for s in git(repo.path, "log", "--format=%at", "main").split()]
    newest, oldest = datetime.fromtimestamp(max(stamps), UTC), datetime.fromtimestamp(min(stamps), UTC)
    assert END - timedelta(hours=2) < newest < END
    assert timedelta(days=170) < newest - oldest < timedelta(days=190)
    committer = [int(s) for s in git(repo.path, "log", "--first-parent", "--format=%ct", "main").split()]
    assert committer == sorted(committer, reverse=True)


def test_final_state_leaves_promotions_to_do(repo) -> None:
    versions = read_current_versions(repo.path)
    assert set(versions) == {a.name for a in repo.apps}
    behind = [a for a, v in versions.items() if v["prod"] != v["stage"]]
    stage_is_dev = [a for a, v in versions.items() if v["stage"] == v["dev"]]
    assert len(behind) >= len(versions) * 0.6
    assert stage_is_dev


def test_tags_are_present(repo) -> None:
    tags = git(repo.path, "tag").split()
    assert "bootstrap" in tags


def test_parse_kustomization_tolerates_reformatting() -> None:
    text = (
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: 'team-app'\n"
        "resources:\n- ../../../apps/app/base\nimages:\n- name: registry.example.com/acme/app\n"
        "  newName: mirror.example.com/acme/app\n  newTag: '2.0.1'  # promoted\n"
        "replicas:\n- name: app\n  count: 5\n"
    )
    k = parse_kustomization(text)
    assert k.namespace == "team-app"
    assert k.images[0].reference == "mirror.example.com/acme/app:2.0.1"
    assert k.replicas == 5


def test_pack_backend_matches_fast_import_and_passes_fsck(tmp_path: Path) -> None:
    fast = generate_repo(tmp_path / "fi.git", apps=6, commits=250, seed=9, backend="fast-import")
    packed = generate_repo(tmp_path / "pk.git", apps=6, commits=250, seed=9)
    assert packed.head_sha == fast.head_sha
    assert git(packed.path, "tag").split() == git(fast.path, "tag").split()
    subprocess.run(
        ["git", "-C", str(packed.path), "fsck", "--full", "--strict"], check=True, capture_output=True
    )


def test_speed_200_apps_5000_commits(tmp_path: Path) -> None:
    started = time.monotonic()
    result = generate_repo(tmp_path / "big.git", apps=200, clusters=2, commits=5000, seed=11)
    elapsed = time.monotonic() - started
    assert int(git(result.path, "rev-list", "--count", "main")) == 5000
    assert elapsed < 20, f"generation took {elapsed:.1f}s"


def test_a_helm_apps_values_stay_values_files_through_reverts(tmp_path: Path) -> None:
    """The revertable change of a Helm-values app restores its values.yaml (not a kustomization)."""
    generated = generate_repo(tmp_path / "helm.git", apps=3, clusters=1, commits=80, seed=11, helm_apps=1)
    helm = next(a for a in generated.apps if a.source == "helm")
    for env in ("dev", "stage", "prod"):
        text = show(generated.path, f"environments/{env}/{helm.name}/values.yaml")
        assert "kind: Kustomization" not in text and "image:" in text and "tag:" in text, env
