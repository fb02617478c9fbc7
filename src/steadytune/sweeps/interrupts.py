"""SIGTERM stops a sweep the way Ctrl-C does.

``kill`` or a batch scheduler ending the job sends SIGTERM. By default it ends the
process at once: the recorded results are safe (each is one transaction), but none of the
clean-up of Ctrl-C happens (pool workers killed and joined, leases released, one clear
message and exit status). While
:func:`sigterm_stops_like_ctrl_c` is active, SIGTERM raises :class:`Terminated`, a
:class:`KeyboardInterrupt`, so both take the same path.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler ending the job) as an interrupt: it stops a sweep
    the way Ctrl-C does, with the pool's workers killed and the finished runs kept."""


@contextmanager
def sigterm_stops_like_ctrl_c() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread; further
    SIGTERMs during the (bounded) clean-up are ignored. The old handler comes back after.

    Off the main thread (where Python cannot set signal handlers) it does nothing.
    """
    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a library thread): leave it be
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["Terminated", "sigterm_stops_like_ctrl_c"]
