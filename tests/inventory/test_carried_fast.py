"""The first ingest's shortcut for kustomize-images values gives `carried_value`'s value, or nothing."""

from __future__ import annotations

import random

import pytest

from inventory.carried import carried_value, images_frame, images_value_after
from inventory.models import Application, Environment

PRIOR = (
    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: team-a\n"
    "resources:\n  - ../../../apps/a/base\nlabels:\n  - pairs:\n      env: dev\n"
    'images:\n  - name: registry.example.com/a\n    newTag: "1.0"\n'
    "configMapGenerator:\n  - name: a-config\n    literals:\n      - LOG_LEVEL=info\n"
)
_HEAD, _, _REST = PRIOR.partition("images:\n")
_TAIL = _REST[_REST.index("configMapGenerator") :]
# Lines an images block may hold: the usual ones and what the fast reader or kustomize refuse.
_LINES = [
    "  - name: registry.example.com/a", '    newTag: "2.0"', "    newTag: 2.1", "    digest: sha256:ab",
    "    newName: other/a", "- name: col0/a", "  newTag: x", "", "  # a comment", "# col 0 comment",
    "  - name:", "    newTag: |", "      literal", "  - [flow]", "  foo: bar", "---", "  - name: ünï",
    "    newTag: 'q'", '    newTag: "a\\"b"', "  - name: a # trailing", "  -", "   ", "\t- name: t",
    "    newTag: a: b", "  - name: dup", "    name: dup", "images:", "resources:", "- x",
]  # fmt: skip


def _app(strategy: str = "kustomize-images") -> tuple[Application, Environment]:
    return Application(pk=1, name="a", strategy=strategy), Environment(pk=1, name="dev")


def _full(text: str) -> str:
    app, env = _app()
    return carried_value(app, env, lambda _path: text)


def test_a_changed_tag_takes_the_shortcut_with_the_full_value() -> None:
    app, env = _app()
    frame = images_frame(PRIOR)
    assert frame == (_HEAD, _TAIL)
    text = PRIOR.replace('"1.0"', '"2.0"')
    fast = images_value_after(app, env, frame, text)
    assert fast is not None and fast[0] == _full(text) != _full(PRIOR)


@pytest.mark.parametrize(
    "text",
    [
        PRIOR.replace("team-a", "team-b").replace('"1.0"', '"2.0"'),  # not only the images block
        PRIOR.replace("images:\n", "images: []\n"),  # no `images:` line
        _HEAD + "images:\n  - [flow]\n" + _TAIL,  # the fast reader refuses the block
        _HEAD + "images:\n  foo: bar\n" + _TAIL,  # images: expected a list
    ],
)
def test_no_shortcut_where_it_could_differ(text: str) -> None:
    app, env = _app()
    assert images_value_after(app, env, images_frame(PRIOR), text) is None  # type: ignore[arg-type]


def test_no_frame_for_a_text_that_does_not_read() -> None:
    assert images_frame(PRIOR.replace("resources:\n  - ../../../apps/a/base\n", "resources: x\n")) is None
    assert images_frame("images: [unclosed\n") is None
    assert images_frame(None) is None
    assert images_value_after(*_app("helm-values"), images_frame(PRIOR), PRIOR) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("place", ["middle", "first", "last"])
def test_random_images_blocks_give_carried_values_value_whenever_taken(place: str) -> None:
    head, tail = {"middle": (_HEAD, _TAIL), "first": ("", _HEAD + _TAIL), "last": (_HEAD + _TAIL, "")}[place]
    rng = random.Random(place)
    app, env = _app()
    taken = 0
    for _ in range(3000):
        block = "images:\n" + "".join(line + "\n" for line in rng.choices(_LINES, k=rng.randint(0, 5)))
        prior_block = "images:\n" + "".join(
            line + "\n" for line in rng.choices(_LINES[:8], k=rng.randint(0, 3))
        )
        frame = images_frame(head + prior_block + tail)
        text = head + block + tail
        fast = images_value_after(app, env, frame, text) if frame is not None else None
        if fast is not None:
            taken += 1
            assert fast[0] == _full(text), text
            assert images_frame(text) == fast[1]  # the text can be the prior of the next one
    assert taken > 100  # the shortcut is taken often, so the comparison above means something
