"""The one kustomization reader and the one rule for which image is "the version"."""

from __future__ import annotations

import pytest

from core.kustomize import KustomizationError, KustomizeImage, image_version, read_kustomization

SIDECAR_FIRST = """\
resources:
  - ../../base
images:
  - name: ghcr.io/acme/envoy
    newTag: v1.30.1
  - name: ghcr.io/acme/checkout
    newTag: "2.4.1"
"""


def test_reads_images_with_new_name_tag_and_digest():
    text = """\
images:
  - name: checkout
    newName: registry.example/acme/checkout
    newTag: 1.10
  - name: worker
    digest: sha256:0123456789abcdef0123456789abcdef
resources: [../../base, deployment.yaml]
"""
    k = read_kustomization(text)
    assert k.images == [
        KustomizeImage(name="checkout", new_name="registry.example/acme/checkout", new_tag="1.10"),
        KustomizeImage(name="worker", digest="sha256:0123456789abcdef0123456789abcdef"),
    ]
    assert k.images[0].image == "registry.example/acme/checkout"
    assert str(k.images[0]) == "registry.example/acme/checkout:1.10"
    assert k.images[1].reference == "worker@sha256:0123456789abcdef0123456789abcdef"
    assert k.resources == ["../../base", "deployment.yaml"]


def test_a_number_like_tag_is_kept_as_written():
    assert image_version("images:\n  - name: app\n    newTag: 1.10\n", "app") == "1.10"


def test_the_image_named_after_the_app_is_the_version_even_when_listed_second():
    assert image_version(SIDECAR_FIRST, "checkout") == "2.4.1"


def test_with_several_images_and_none_named_after_the_app_the_first_one_is_the_version():
    assert image_version(SIDECAR_FIRST, "payments") == "v1.30.1"


def test_a_single_image_is_the_version_whatever_its_name():
    assert image_version("images:\n  - name: ghcr.io/acme/svc\n    newTag: v3\n", "checkout") == "v3"


def test_new_name_matches_the_app_when_name_does_not():
    text = """\
images:
  - name: envoy
    newTag: v1
  - name: placeholder
    newName: ghcr.io/acme/checkout
    newTag: v7
"""
    assert image_version(text, "checkout") == "v7"


def test_the_digest_is_the_version_when_there_is_no_tag_and_wins_over_a_tag():
    text = """\
images:
  - name: checkout
    digest: sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
  - name: other
    newTag: v1
    digest: sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
"""
    assert image_version(text, "checkout") == "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    assert image_version(text, "other") == "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"


def test_no_images_no_version_and_bytes_are_accepted():
    assert image_version("resources: [a.yaml]\n", "checkout") == ""
    assert image_version(b"", "checkout") == ""
    assert image_version(None, "checkout") == ""
    assert image_version(b"images:\n  - name: checkout\n    newTag: v2\n", "checkout") == "v2"


def test_entries_without_a_name_are_skipped():
    k = read_kustomization("images:\n  - newTag: v1\n  - name: app\n    newTag: v2\n")
    assert [i.name for i in k.images] == ["app"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("images:\n  - name: [unclosed\n", "not valid YAML (line"),
        ("- just\n- a list\n", "expected a mapping"),
        ("images: checkout\n", "images: expected a list"),
        ("resources: base\n", "resources: expected a list"),
    ],
)
def test_malformed_kustomization_raises_a_clear_error(text, message):
    with pytest.raises(KustomizationError, match=message.replace("(", r"\(")):
        read_kustomization(text)
    with pytest.raises(KustomizationError):
        image_version(text, "app")


# The poller reads thousands of historic overlays per cycle: plain block YAML is read by a fast
# reader, anything else by the full parser. Both must read every text exactly alike.
FAST_READER_TEXTS = [
    SIDECAR_FIRST,
    "",
    "# only a comment\n",
    "images:\n- name: a\n  newTag: '1.0'\n",  # a sequence at the key's own indentation
    "images:\n  -   name: a\n      newTag: 1.0 # a comment\n",
    "kind: Kustomization\npatches:\n  - patch: |-\n      - op: replace\n        path: /x\n\n        value: 3\n    target:\n      kind: Deployment\nimages:\n  - name: a\n    newTag: b\n",
    "patches:\n  - patch: |\n      a: b\n      # kept as text\n\n\nimages:\n  - name: x\n    digest: sha256:abc\n",
    "images:\n  - name: a\n    newTag: ~\n  - name: b\n    newTag: null\n    newName:\n",
    "images: [{name: a, newTag: '1'}]\n",  # flow style: the full parser
    "images:\n  - name: &n a\n    newTag: *n\n",  # anchors: the full parser
    'images:\n  - name: a\n    newTag: "1\\t2"\n',  # an escape: the full parser
    "a: b\na: c\n",  # a duplicate key: the full parser's error
    "images:\n  - name: a\n   newTag: bad indentation\n",
    "images:\n\tname: a\n",
    "---\nimages: []\n---\n",
    "images:\n  - name: a\n    newTag: x: y\n",
    "- just\n- a list\n",
]


def _read_both(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    import core.kustomize as kustomize

    def result() -> object:
        try:
            return read_kustomization(text)
        except KustomizationError as exc:
            return ("error", str(exc))

    fast = result()

    def not_simple(source: str) -> object:
        raise kustomize._NotSimple

    with monkeypatch.context() as patched:
        patched.setattr(kustomize, "_simple_yaml", not_simple)
        full = result()
    return fast, full


@pytest.mark.parametrize("text", FAST_READER_TEXTS)
def test_the_fast_reader_reads_like_the_full_parser(text, monkeypatch):
    fast, full = _read_both(text, monkeypatch)
    assert fast == full


def test_a_generated_overlay_takes_the_fast_path():
    from core.kustomize import _simple_yaml

    overlay = FAST_READER_TEXTS[5]
    assert _simple_yaml(overlay)["patches"][0]["patch"] == "- op: replace\n  path: /x\n\n  value: 3"
