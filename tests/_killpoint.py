"""Run the steadytune CLI with a deterministic kill point (used by test_sweep.py).

    python tests/_killpoint.py MODE K steadytune-args...

MODE ``in_txn``: SIGKILL itself inside the K-th (0-based) result transaction, after the
run's curves and diagnostics are written and before COMMIT. ``after``: SIGKILL itself
right after the K-th result is committed. ``hold``: after K results, block until the
test kills it (at a random moment of its own). Each mode ends the driver before the
sweep is complete, whatever the machine's speed.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import steadytune.store.study as store


def main() -> None:
    mode, k = sys.argv[1], int(sys.argv[2])
    recorded = 0
    real_record, real_log = store.Study.record_result, store._add_log

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def log_then_die(conn, run_id, log):  # inside the write transaction of record_result
        real_log(conn, run_id, log)
        if recorded == k:
            die()

    def record(self, *args, **kwargs):
        nonlocal recorded
        if mode == "hold" and recorded >= k:
            time.sleep(3600)  # the test kills us here at the latest
        out = real_record(self, *args, **kwargs)
        if mode == "after" and recorded == k:
            die()
        recorded += 1
        return out

    store.Study.record_result = record
    if mode == "in_txn":
        store._add_log = log_then_die
    from steadytune.cli.app import app

    sys.argv = ["steadytune", *sys.argv[3:]]
    app()


if __name__ == "__main__":
    main()
