"""One GPU lease, in order of value, each part under its own time limit; everything resumes.

    bash bench/gpu.sh prepare                         # here: .gpu_bundle/ (fp16 MiniLM, xz; GLUE files)
    python3 bench/gpu_session.py --budget 540         # there (carry .gpu_bundle); writes to $OUT

1. ``check``: a run trained in a group equals the run trained alone on this GPU
   (``bench/gpu_check.py``: tiny BERT/RoBERTa/ALBERT and MiniLM, fp32 and bf16).
2. ``groups``: seeds per minute of MiniLM runs (RTE 1,024-example slice, mosbach2021, 1
   epoch = 64 steps, dev evaluated before and after; model loading and start-up included)
   for (worker processes, runs per group) pairs, against one run at a time; the fastest pair runs the studies below (grouping is used only if the check
   passed).
3. ``factorial``: which seed stream causes the spread (CoLA 1k, 5 head x 5 data seeds;
   devlin2019 with 2 repeats per cell: the nondeterminism floor; then mosbach2021).
4. ``guard``: the doomed-run guard on new seeds (CoLA and RTE 1k, seeds 101-110; devlin2019
   unguarded / restart / switch at lr 2e-5 and 2e-4; then mosbach2021).
5. ``table1``: the full-data Table 1 analogue (resumes ``results/table1-gpu.db``).

Each study resumes its committed copy in ``results/`` and is written to ``$OUT`` (WAL folded
in); copy them back to ``results/`` and run ``python results/reproduce.py``. A part stopped
by its time limit (SIGINT) keeps every finished run. ``--parts`` picks parts; ``--device cpu``
with ``--rehearse`` runs every part on a tiny slice on this machine.
"""

from __future__ import annotations

import argparse
import lzma
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / ".gpu_bundle"
PAIRS = ((1, 1), (16, 1), (1, 16), (4, 16), (8, 8))
"""(workers, runs per group) measured by the ``groups`` part; (1, 1) is the baseline."""


class Session:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.t0 = args, time.monotonic()
        self.out = Path(os.environ.get("OUT") or "/tmp/gpu-out")
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = open(self.out / "session.txt", "a", buffering=1)
        self.model = args.model or str(BUNDLE / "minilm-fp16")
        self.data = args.data_dir or str(BUNDLE / "glue")
        self.workers, self.group = 16, 1
        self.grouping_ok = False

    def say(self, text: str) -> None:
        line = f"[{self.elapsed():5.0f}s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.args.budget - self.elapsed()

    def run(self, cmd: list[str], limit: float, log: str) -> int | None:
        """Run ``cmd`` for at most ``limit`` seconds (SIGINT, then SIGKILL); output to ``$OUT/log``."""
        limit = min(limit, self.left() - 10)
        if limit < 15:
            self.say(f"skipped (time): {' '.join(cmd[:6])} ...")
            return None
        with open(self.out / log, "a") as sink:
            sink.write(f"\n$ {' '.join(cmd)}\n")
            sink.flush()
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, env=self.env())
            try:
                return proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # a sweep stops cleanly: finished runs are stored
                try:
                    return proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    return proc.wait()

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1",
                "TOKENIZERS_PARALLELISM": "false"}

    def sweep(self, store: Path, args: list[str], limit: float, log: str, workers: int | None = None,
              group: int | None = None) -> None:
        extra = self.args.extra.split() if self.args.extra else []
        cmd = [sys.executable, "-m", "steadytune", "sweep", "--model", self.model, "--data-dir", self.data,
               "--set", f"device={self.args.device}", "--store", str(store),
               "--workers", str(workers or self.workers), "--group-size", str(group or self.group), *args, *extra]
        code = self.run(cmd, limit, log)
        self.say(f"  {store.name}: exit {code}; {fold(store)}")

    def study(self, name: str) -> Path:
        """``$OUT/name``, started from the committed ``results/name`` when there is one."""
        store = self.out / name
        committed = REPO / "results" / name
        if committed.exists() and not store.exists():
            shutil.copy(committed, store)
        return store


def fold(store: Path) -> str:
    """Fold the WAL into the study file (only the file comes back); its runs by status."""
    if not store.exists():
        return "no study"
    conn = sqlite3.connect(store)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return str(dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()))
    finally:
        conn.close()


def unpack_bundle() -> None:
    """The bundle carries the model weights xz-compressed (64 MiB travel); unpack once."""
    packed = BUNDLE / "minilm-fp16" / "model.safetensors.xz"
    target = packed.with_suffix("")
    if packed.exists() and not target.exists():
        with lzma.open(packed) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def part_check(s: Session) -> None:
    cmd = [sys.executable, "bench/gpu_check.py", "--device", s.args.device, "--model", s.model,
           "--data-dir", s.data, "--steps", "8"]
    s.run(cmd, 150, "check.txt")
    text = (s.out / "check.txt").read_text() if (s.out / "check.txt").exists() else ""
    s.grouping_ok = "grouped_check=ok" in text
    s.say(f"check: grouping {'ok' if s.grouping_ok else 'NOT ok: studies run ungrouped'}")
    for line in text.splitlines():
        if "group-vs-alone" in line:
            s.say("  " + line.strip())


def part_groups(s: Session) -> None:
    limit = s.args.train_limit or 1024
    base: float | None = None
    best = (0.0, 16, 1)
    pairs = [tuple(int(x) for x in pair.split("x")) for pair in s.args.pairs.split(",")]
    for workers, group in pairs:
        if group > 1 and not s.grouping_ok:
            continue
        runs = (2 if workers == 1 else workers) if group == 1 else workers * group
        store = s.out / f"pack-{workers}x{group}.db"
        store.unlink(missing_ok=True)
        start = time.monotonic()
        s.sweep(store, ["--tasks", "rte", "--recipes", "mosbach2021", "--seeds", f"1-{runs}", "--train-limit",
                        str(limit), "--set", "epochs=1", "--set", "evals_per_epoch=1"],
                limit=s.args.pair_limit, log="groups.txt", workers=workers, group=group)
        done = dict(sqlite3.connect(store).execute("SELECT status, count(*) FROM runs GROUP BY status")) \
            if store.exists() else {}
        finished = done.get("finished", 0) + done.get("diverged", 0)
        if finished < runs:
            s.say(f"workers={workers} group={group}: {finished}/{runs} runs in time, not counted")
            continue
        per_min = 60 * runs / (time.monotonic() - start)
        base = base or per_min
        s.say(f"workers={workers:2d} group={group:2d} runs={runs:3d} runs/min={per_min:7.2f} "
              f"vs one at a time {per_min / base:5.2f}x")
        if per_min > best[0]:
            best = (per_min, workers, group)
    s.workers, s.group = best[1], best[2]
    s.say(f"studies use workers={s.workers} group={s.group}")


def part_factorial(s: Session) -> None:
    store = s.study("factorial-cola1k-gpu.db")
    common = ["--tasks", "cola", "--seeds", "1", "--grid", "head_seed=1-5", "--grid", "data_seed=1-5",
              "--train-limit", str(s.args.train_limit or 1000), "--set", "evals_per_epoch=1", "--set", "diag_every=50"]
    s.sweep(store, ["--recipes", "devlin2019", "--repeats", "2", *common], limit=s.args.budget * 0.2,
            log="factorial.txt")
    s.sweep(store, ["--recipes", "mosbach2021", *common], limit=s.args.budget * 0.2, log="factorial.txt")


def part_guard(s: Session) -> None:
    store = s.study("guard-1k-gpu.db")
    common = ["--tasks", "cola,rte", "--seeds", "101-110", "--train-limit", str(s.args.train_limit or 1000),
              "--set", "evals_per_epoch=1"]
    s.sweep(store, ["--recipes", "devlin2019", "--grid", "lr=2e-5,2e-4", "--grid", "guard=flag,restart,switch",
                    "--set", "guard_switch=correct_bias=true", "--set", "guard_attempts=3", *common],
            limit=s.args.budget * 0.25, log="guard.txt")
    s.sweep(store, ["--recipes", "mosbach2021", *common], limit=s.args.budget * 0.2, log="guard.txt")


def part_table1(s: Session) -> None:
    store = s.study("table1-gpu.db")
    args = ["--tasks", "rte,mrpc,cola", "--recipes", "devlin2019,mixout2020,mosbach2021", "--seeds", "1-25",
            "--set", "diag_every=100"]
    if s.args.train_limit:
        args += ["--train-limit", str(s.args.train_limit)]
    s.sweep(store, args, limit=s.left(), log="table1.txt")


PARTS = {"check": part_check, "groups": part_groups, "factorial": part_factorial, "guard": part_guard,
         "table1": part_table1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=540, help="seconds for the whole session")
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-limit", type=int, default=0, help="rehearsal: every study on this many examples")
    p.add_argument("--extra", default="", help="rehearsal: extra sweep arguments, e.g. '--max-steps 3'")
    p.add_argument("--pairs", default=",".join(f"{w}x{g}" for w, g in PAIRS),
                   help="(workers)x(group size) pairs the 'groups' part measures, the first the baseline")
    p.add_argument("--pair-limit", type=float, default=60, help="seconds for each pair of 'groups'")
    p.add_argument("--workers", type=int, default=0, help="skip 'groups': use these workers ...")
    p.add_argument("--group", type=int, default=0, help="... and this group size")
    args = p.parse_args()
    unpack_bundle()
    s = Session(args)
    s.say(f"python {sys.version.split()[0]}; parts {args.parts}; budget {args.budget:.0f}s")
    if args.workers:
        s.workers, s.group, s.grouping_ok = args.workers, args.group or 1, True
    for name in args.parts.split(","):
        if s.left() < 25:
            s.say(f"{name}: no time left")
            continue
        s.say(f"== {name}")
        PARTS[name](s)
    s.say("done")


if __name__ == "__main__":
    main()
