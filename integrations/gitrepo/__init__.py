"""Git plumbing through GitPython's command interface (`git.Git`), never its object model.

Security rules applied to every command:
- refs, SHAs, paths and remote URLs are validated before they reach argv, and revisions are
  placed after `--end-of-options` / paths after `--` so nothing user-derived is read as an option;
- tokens reach git only through `GIT_CONFIG_*` environment variables (an `http.<origin>.extraHeader`
  scoped to the remote's origin), never argv, URLs or repository config;
- no prompts (`GIT_TERMINAL_PROMPT=0`), no user/system config, protocols restricted with
  `GIT_ALLOW_PROTOCOL`.

Repository content is data, never code (every command, mirror and workspace alike):
- `core.symlinks=false`: a symlink in the repository is checked out as a plain file holding the link
  text, so nothing in a clone points outside it or into `.git`;
- `core.fsmonitor=false`, `core.hooksPath=/dev/null`, no submodule recursion, `protocol.file.allow`
  only for the configured sandbox; no system, global or XDG config or attributes (`HOME` is an
  empty directory), so a `.gitattributes` filter or diff driver names nothing that can run: drivers
  exist only in config, and the only repository config is `.git/config`, which only git and the
  portal write;
- every read or write of a work-tree or tree path refuses (`UnsafeRepositoryContent`) a path with a
  `..`, `.git` (any case) or empty component, a symlink or submodule component in the commit's tree
  or on disk, and a file over the size cap (`max_file_bytes`).

Merge commits in `iter_commits` list their changes relative to the first parent
(`--diff-merges=first-parent`): that is what the merge brought into the branch, which is how the
portal maps a merged promotion PR to the environment paths it touched.

Rooms: `validate` (refs, SHAs, paths, remote URLs), `command` (the inert-git environment and the
runner), `paths` (tree path safety), `log` (commit records and the log parser), `mirror`
(GitMirror), `workspace` (GitWorkspace), `treeworkspace` (TreeWorkspace: file edits committed on a
mirror without a clone), `errors`.
"""

from integrations.gitrepo.command import DEFAULT_MAX_FILE_BYTES, NETWORK_TIMEOUT
from integrations.gitrepo.errors import (
    GitError,
    GitTransientError,
    InvalidRef,
    RevertConflict,
    UnsafeRemote,
    UnsafeRepositoryContent,
)
from integrations.gitrepo.log import (
    CommitRecord,
    FileChange,
    LogEntry,
    parse_log_entries,
    parse_log_stream,
    parse_raw_log_entries,
    raw_side,
    raw_sides,
)
from integrations.gitrepo.mirror import BlobsRead, GitMirror, read_blobs
from integrations.gitrepo.treeworkspace import TreeWorkspace
from integrations.gitrepo.validate import (
    check_remote_url,
    validate_ref_name,
    validate_repo_path,
    validate_rev,
    validate_sha,
)
from integrations.gitrepo.workspace import GitWorkspace

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "NETWORK_TIMEOUT",
    "BlobsRead",
    "CommitRecord",
    "FileChange",
    "GitError",
    "GitMirror",
    "GitTransientError",
    "GitWorkspace",
    "InvalidRef",
    "LogEntry",
    "RevertConflict",
    "TreeWorkspace",
    "UnsafeRemote",
    "UnsafeRepositoryContent",
    "check_remote_url",
    "parse_log_entries",
    "parse_log_stream",
    "parse_raw_log_entries",
    "raw_side",
    "raw_sides",
    "read_blobs",
    "validate_ref_name",
    "validate_repo_path",
    "validate_rev",
    "validate_sha",
]
