"""The first ingest's kustomize-images values in a process of their own (`python -m inventory.carried_worker`).

A first ingest is three CPU-bound tasks: git writing its log, this project parsing it and valuing
what each commit carries, PostgreSQL storing rows. The parsing thread was the longest of them;
the values are pure text work on blobs (`inventory.carried.ImagesValuer`), so they run here, on the
other core, while the ingest parses the next batch. No Django and no database in this process:
it reads the blobs itself with `git cat-file --batch` and answers one bit per pair.

Protocol (stdin → stdout, frames of a 4-byte big-endian length and a pickle; the parent is the
only writer, this is not a trust boundary): first `(git_dir, env, max_bytes, cache_limit)`, then per
batch a list of (blob before, blob after) pairs answered in order by `bytes` (1: the value changed,
0: it did not) or None when git could not read the blobs (the ingest then counts nothing as carried,
as `_carried` does when `files_at` fails); None ends the process.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from typing import IO, Any

_LENGTH = struct.Struct(">I")


def send(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    """The next message; EOFError when the other side is gone."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError
    size = _LENGTH.unpack(head)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - our parent's frames, on our own pipe


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    from integrations.gitrepo import GitError, read_blobs
    from inventory.carried import ImagesValuer

    git_dir, env, max_bytes, limit = receive(requests)
    valuer = ImagesValuer(limit)
    while (pairs := receive(requests)) is not None:
        valuer.make_room(len(pairs))
        try:
            blobs = read_blobs(git_dir, env, max_bytes, valuer.needed(pairs))
        except GitError:
            send(answers, None)
            continue
        texts = {
            oid: None if data is None else data.decode("utf-8", "replace") for oid, data in blobs.items()
        }
        send(answers, bytes(valuer.changed(pairs, texts)))


class ImagesProcess:
    """The ingest's side: start the process, hand it batches, take the answers in order.

    Two threads move the frames (they wait without the GIL): one writes the batches, so the ingest
    never waits for the process to take one off a full pipe, the other reads the answers as they
    come. `answer` raises EOFError when the process is gone (killed, crashed): the ingest then
    values the rest itself.
    """

    def __init__(self, reader: tuple[str, dict[str, str], int], limit: int, *, cwd: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "inventory.carried_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=cwd,
            env={**_python_env(), "PYTHONPATH": cwd},
        )
        self._answers: list[Any] = []
        self._ready = threading.Condition()
        self._ended = False
        self._unanswered = 0  # batches handed over and not answered yet
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._read, name="ingest-carried-answers", daemon=True),
            threading.Thread(target=self._write, name="ingest-carried-batches", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._outbox.put((*reader, limit))

    def submit(self, pairs: list[tuple[str | None, str | None]]) -> None:
        if self._ended:
            raise EOFError
        self._outbox.put(pairs)
        self._unanswered += 1

    def answer(self) -> bytes | None:
        """The answer to the oldest batch not answered yet (waits for it)."""
        with self._ready:
            self._ready.wait_for(lambda: self._answers or self._ended)
            if not self._answers:
                raise EOFError
            answer: bytes | None = self._answers.pop(0)
            self._unanswered -= 1
            return answer

    def close(self) -> None:
        """End the process: politely when it is idle, else killed (an ingest that stopped midway)."""
        self._outbox.put(None)
        try:
            self._proc.wait(timeout=0 if self._unanswered else 5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for thread in self._threads:
            thread.join(timeout=5)

    def _write(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while True:
                message = self._outbox.get()
                send(stdin, message)
                if message is None:
                    break
        except OSError:
            pass  # the process is gone: the reader sees it end
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        try:
            while True:
                message = receive(self._proc.stdout)
                with self._ready:
                    self._answers.append(message)
                    self._ready.notify()
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        finally:
            with self._ready:
                self._ended = True
                self._ready.notify_all()


def _python_env() -> dict[str, str]:
    """The environment for the process: the parent's minus anything that would change Python."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


if __name__ == "__main__":
    with contextlib.suppress(EOFError):  # EOF: the ingest is gone
        serve(sys.stdin.buffer, sys.stdout.buffer)
