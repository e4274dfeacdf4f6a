"""The poller as it runs in production, minus Celery: `instance_poll` on a fixed schedule, in its own
process (``python -m bench.poll_loop INSTANCE_ID INTERVAL``), until stdin closes or it is killed."""

from __future__ import annotations

import sys
import threading
import time


def main() -> None:
    import django

    django.setup()
    from inventory.poll import instance_poll

    instance_id, interval = int(sys.argv[1]), float(sys.argv[2])
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    tick = time.monotonic()
    while not stop.is_set():
        start = time.monotonic()
        result = instance_poll(instance_id=instance_id)
        print(
            f"poll {time.time():.3f} took {time.monotonic() - start:.3f}s changed={result.apps_changed} "
            f"error={result.error!r} phases={result.phases}",
            flush=True,
        )
        tick += interval  # beat-like: a fixed schedule, whatever the poll took
        stop.wait(max(0.0, tick - time.monotonic()))


if __name__ == "__main__":
    main()
