"""The first ingest's shortcut for kustomize-images values gives `carried_value`'s value, or nothing."""

from __future__ import annotations

import random
from typing import Any

import pytest

from core.kustomize import _NotSimple, _simple_yaml, kustomization_of
from inventory.carried import (
    _image_pins,
    _plain_block_entries,
    _plain_block_pins,
    carried_value,
    images_frame,
    images_value,
    images_value_after,
    images_value_in_frame,
    simple_yaml_by_sections,
)
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


# The first ingest's cheaper readers: each gives what the reader it stands for gives, or nothing ----

_SECTION_LINES = [
    "a: 1", "b: x", "images:", "resources:", "- r", "  - r", "  - name: n", "    newTag: t", "c: |",
    "  literal", "c2: |-", "    deeper", "", "   ", "# col 0", "  # indented", "---", "...", "%YAML",
    "d:", "  e: f", "    g: h", "  - [flow]", "x: {a: 1}", "dup: 1", "dup: 2", "\tt: 1", "k: ünï",
    "  ", "- top item", "weird line", "q: 'quoted'", 'r: "dq"', "s: a: b", "e: ~",
]  # fmt: skip


def _simple_or_refused(text: str, read: Any) -> Any:
    try:
        return ("ok", read(text))
    except _NotSimple:
        return ("refused",)


def test_reading_by_sections_gives_the_fast_readers_result() -> None:
    rng = random.Random(7)
    sections: dict[str, Any] = {}  # shared: sections are cached across texts
    read = 0
    for _ in range(6000):
        lines = rng.choices(_SECTION_LINES, k=rng.randint(1, 9))
        text = "\n".join(lines) + ("\n" if rng.random() < 0.8 else "")
        expected = _simple_or_refused(text, _simple_yaml)
        assert _simple_or_refused(text, lambda t: simple_yaml_by_sections(t, sections)) == expected, text
        read += expected[0] == "ok"
    assert read > 300


_TAGS = ['"1.0"', "1.10", "'1.2'", "v2", "~", "null", '" sp "', "sha256:ab12", "a:b", "1e3", "true", "x-"]
_BLOCK_LINES = [
    "{i}- name: registry.example.com/a", "{i}- name: other/b", "{i}  newTag: {t}", "{i}  newName: n/a",
    "{i}  digest: {t}", "{i}  name: dup", "{i}  newTag: {t} # c", "{i}  other: x", "# c", "",
    "{i}- {{name: f, newTag: t}}", "{i}  newTag:", "{i}- name: {t}",
]  # fmt: skip


def test_plain_blocks_read_as_the_fast_reader_reads_them() -> None:
    rng = random.Random(11)
    taken = 0
    for _ in range(6000):
        indent = rng.choice(["", "  ", "    "])
        lines = [
            rng.choice(_BLOCK_LINES).format(i=indent, t=rng.choice(_TAGS)) for _ in range(rng.randint(1, 6))
        ]
        block = "images:\n" + "".join(line + "\n" for line in lines)
        pins = _plain_block_pins(block)
        if pins is None:
            continue
        taken += 1
        assert pins == tuple(_image_pins(kustomization_of(_simple_yaml(block)))), block
        assert {"images": _plain_block_entries(block)} == _simple_yaml(block), block
    assert taken > 200


def test_images_value_compares_as_carried_value_and_frames_as_images_frame() -> None:
    rng = random.Random(3)
    texts: list[str | None] = []
    for _ in range(400):
        block = "images:\n" + "".join(line + "\n" for line in rng.choices(_LINES, k=rng.randint(0, 4)))
        head = rng.choice([_HEAD, "", "resources: x\n", "a: &t 1\n", _HEAD.replace("team-a", "team-b")])
        texts.append(head + block + rng.choice([_TAIL, "", "images: []\n", "z: 1"]))
    texts += [None, "images: [unclosed\n", "", "- a\n"]
    sections: dict[str, Any] = {}
    values = [images_value(t) for t in texts]
    assert [images_value(t, sections) for t in texts] == values
    digests = [_full(t) for t in texts]  # type: ignore[arg-type]
    for text, (_, frame) in zip(texts, values, strict=True):
        assert frame == images_frame(text)
    for _ in range(20000):
        a, b = rng.randrange(len(texts)), rng.randrange(len(texts))
        assert (values[a][0] == values[b][0]) == (digests[a] == digests[b]), (texts[a], texts[b])
    frames = {f: None for _, f in values if f is not None}
    for text, (value, _) in zip(texts, values, strict=True):
        if text is not None and (fast := images_value_in_frame(text, frames)) is not None:
            assert fast == value, text


def test_a_block_that_ends_at_a_comment_at_column_0_frames_nothing() -> None:
    # The fast reader skips the comment: `images` holds the image after it, which the block
    # (it ends at the comment) does not; the same frame with another block must not be trusted.
    text = _HEAD + "images:\n# pinned by CI\n  - name: registry.example.com/a\n    newTag: '1'\n" + _TAIL
    assert _full(text) != _full(_HEAD + "images:\n" + _TAIL)
    assert images_frame(text) is None
    assert images_value(text)[1] is None
    assert images_value(text, {})[1] is None
