"""core.diffs: the one unified diff (explicit labels) and the one way pages colour it."""

from __future__ import annotations

from core.diffs import NO_NEWLINE, classify_diff, diff_lines, diff_text


def test_diff_lines_uses_the_given_labels_and_context():
    old = "".join(f"line {i}\n" for i in range(10))
    new = old.replace("line 5\n", "line five\n")
    lines = diff_lines(
        old, new, old_label="a/env/prod/kustomization.yaml", new_label="b/env/prod/kustomization.yaml"
    )
    assert lines[:3] == [
        "--- a/env/prod/kustomization.yaml",
        "+++ b/env/prod/kustomization.yaml",
        "@@ -3,7 +3,7 @@",
    ]
    assert "-line 5" in lines and "+line five" in lines
    narrow = diff_lines(old, new, old_label="before", new_label="after", context=1)
    assert narrow[:3] == ["--- before", "+++ after", "@@ -5,3 +5,3 @@"]
    assert all(not line.endswith("\n") for line in lines)


def test_a_new_file_diffs_against_dev_null_and_equal_texts_give_nothing():
    lines = diff_lines("", "a: 1\n", old_label="/dev/null", new_label="b/new.yaml")
    assert lines == ["--- /dev/null", "+++ b/new.yaml", "@@ -0,0 +1 @@", "+a: 1"]
    assert diff_lines("same\n", "same\n", old_label="a/x", new_label="b/x") == []
    assert diff_text("same\n", "same\n", old_label="a/x", new_label="b/x") == ""


def test_a_missing_final_newline_is_marked_as_git_does():
    text = diff_text("a\nb\n", "a\nc", old_label="a/f", new_label="b/f")
    assert text.endswith(f"-b\n+c\n{NO_NEWLINE}\n")


def test_classify_diff_gives_one_class_per_kind_of_line():
    text = "\n".join(
        [
            "diff --git a/f b/f",
            "index 1234567..89abcde 100644",
            "--- a/f",
            "+++ b/f",
            "@@ -1,2 +1,2 @@",
            " kept",
            "-old",
            "+new",
        ]
    )
    assert [css for css, _ in classify_diff(text)] == [
        "file",
        "file",
        "file",
        "file",
        "hunk",
        "",
        "del",
        "add",
    ]
    assert len(classify_diff("x\n" * 10, limit=3)) == 3


def test_the_promotion_file_edit_diff_is_the_core_diff():
    from promotions.strategies import FileEdit

    edit = FileEdit("env/prod/app/kustomization.yaml", "newTag: v1\n", "newTag: v2\n")
    assert edit.diff == diff_text(
        "newTag: v1\n",
        "newTag: v2\n",
        old_label="a/env/prod/app/kustomization.yaml",
        new_label="b/env/prod/app/kustomization.yaml",
    )
    assert FileEdit("new.yaml", None, "a: 1\n").diff.startswith("--- /dev/null\n+++ b/new.yaml\n")
