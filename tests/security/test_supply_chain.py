"""Supply chain: every install (make, CI, the image) comes from the hashed lock, and the lock covers
what pyproject.toml asks for."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "requirements" / "runtime.txt"
DEV = ROOT / "requirements" / "dev.txt"


def _pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """Return {name: (version, hashes)} of a pip-compile style lock (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        spec, *options = line.split(" --")
        name, sep, version = spec.strip().partition("==")
        assert sep, f"{path.name}: {line!r} is not pinned with =="
        hashes = [o.removeprefix("hash=").strip() for o in options if o.startswith("hash=")]
        pins[canonicalize_name(name.split("[")[0])] = (version.strip(), hashes)
    return pins


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("lock", [RUNTIME, DEV], ids=["runtime", "dev"])
def test_every_locked_distribution_is_pinned_with_a_sha256_hash(lock):
    pins = _pins(lock)
    assert len(pins) > 20
    for name, (version, hashes) in pins.items():
        assert re.fullmatch(r"[\w.+!]+", version), name
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name


@pytest.mark.parametrize(
    ("lock", "groups"), [(RUNTIME, ["runtime"]), (DEV, ["runtime", "dev"])], ids=["runtime", "dev"]
)
def test_the_lock_satisfies_every_range_in_pyproject(lock, groups):
    project = _pyproject()
    wanted = [*project["dependencies"]] + (project["optional-dependencies"]["dev"] if "dev" in groups else [])
    pins = _pins(lock)
    for raw in wanted:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in {lock.name}: run `make lock`"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"{lock.name} pins {req.name}=={pins[name][0]}, outside {req.specifier}: run `make lock`"
        )


def test_dev_lock_pins_the_runtime_set_at_the_same_versions():
    runtime, dev = _pins(RUNTIME), _pins(DEV)
    assert {name: pin[0] for name, pin in runtime.items()} == {name: dev[name][0] for name in runtime}


def test_make_ci_and_the_image_install_only_from_the_lock_with_hashes():
    makefile = (ROOT / "Makefile").read_text()
    venv_rule = re.search(r"^\$\(VENV\)/\.installed:(.*?)\n\n", makefile, re.S | re.M).group(0)
    assert "requirements/runtime.txt requirements/dev.txt" in makefile
    assert "$(LOCKS)" in venv_rule.splitlines()[0], "the venv must be rebuilt when a lock changes"
    assert "--require-hashes -r requirements/dev.txt" in venv_rule
    assert "--no-deps -e ." in venv_rule
    assert not re.search(r"pip install[^\n]*(-e '\.\[dev\]'|--upgrade)", makefile)
    assert re.search(r"^lock:", makefile, re.M)

    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install[^\n]*", dockerfile)
    assert installs and all("--require-hashes" in line for line in installs)
    assert "requirements/runtime.txt" in dockerfile

    audit = (ROOT / "scripts" / "pip-audit.sh").read_text()
    assert '-r "$LOCK"' in audit and "requirements/dev.txt" in audit
    assert "make lock" in (ROOT / "README.md").read_text()
