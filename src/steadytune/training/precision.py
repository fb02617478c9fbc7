"""``precision=auto``: bf16 mixed precision where the hardware has a fast bf16 path, fp32 elsewhere.

The machines steadytune runs on differ in the one number that decides this: one 2-core
AMD EPYC multiplied bf16 matrices 5x *slower* than fp32, an Intel Xeon with AMX 7x
*faster*. So nothing is assumed: on a CPU, :func:`probe_cpu` times a matrix product of
the shape a BERT-base/MiniLM feed-forward layer computes (1,024 tokens x 384 x 1,536) in
both precisions, and bf16 is chosen when it is at least :data:`CPU_BF16_MIN_SPEEDUP` times
as fast. The probe takes about a second, times the two precisions in alternation (so a
burst of load from another process slows both alike), and is cached per machine (CPU
model, flags, thread count, torch version) in ``$STEADYTUNE_CACHE`` (default
``~/.cache/steadytune``; delete ``precision-probe.json`` there to measure again).
On CUDA, bf16 is chosen when the device supports it (tensor cores make it the fast path
on every GPU that does). ``$STEADYTUNE_AUTO_PRECISION`` (``fp32`` or ``bf16``) fixes the answer
without probing.

"bf16" means autocast: fp32 master weights and optimiser state, the matrix products in
bf16, gradients of the fp32 weights in fp32, so the gradient-norm diagnostics keep their
fp32 range and accuracy. What was chosen and why is recorded in every result
(:class:`PrecisionChoice`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from steadytune.config.errors import ConfigError

CPU_BF16_MIN_SPEEDUP = 2.0
"""bf16 is chosen on a CPU whose bf16 matmul rate is at least this multiple of its fp32 rate.

A whole fine-tuning step gains much less than its matrix products (AMX: matmul 6.8x,
step ~1.4x, the rest being memory-bound elementwise work), so a CPU whose bf16 matmul is
only a little faster would gain nothing and lose bf16's rounding."""

FORCE_ENV = "STEADYTUNE_AUTO_PRECISION"
"""Environment variable that fixes what ``auto`` means (``fp32`` or ``bf16``) without probing:
for a cluster of mixed machines, or a test suite whose numbers must not depend on the CPU."""

PROBE_SHAPE = (1024, 384, 1536)
"""(tokens, in, out) of the probe's matrix product: a MiniLM feed-forward layer on a batch."""


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses and why."""

    requested: str
    """What the configuration asked for: ``auto``, ``fp32`` or ``bf16``."""
    used: str
    """``fp32`` or ``bf16``."""
    reason: str
    """One sentence, e.g. ``CPU bf16 matmul 6.8x fp32 (>= 2.0x)``."""
    probe: dict[str, Any] | None = None
    """The CPU probe's measurement (GFLOP/s per precision), when one decided."""

    def to_dict(self) -> dict[str, Any]:
        """The choice as a plain JSON-able dict."""
        return asdict(self)


def _matmul_rates(repeats: int = 3, rounds: int = 5) -> dict[str, float]:
    """GFLOP/s of the probe's matrix product in fp32 and in bf16: the best of ``rounds``.

    The two precisions are timed in alternation, round after round, so that a burst of load
    from another process on a shared machine slows both alike instead of one of them.
    """
    tokens, d_in, d_out = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    a32 = torch.randn(tokens, d_in, generator=generator)
    b32 = torch.randn(d_in, d_out, generator=generator)
    pairs = {"fp32": (a32, b32), "bf16": (a32.to(torch.bfloat16), b32.to(torch.bfloat16))}
    best = {name: float("inf") for name in pairs}
    for a, b in pairs.values():
        a @ b  # warm-up: kernel selection and first-touch allocation
    for _ in range(rounds):
        for name, (a, b) in pairs.items():
            start = time.perf_counter()
            for _ in range(repeats):
                a @ b
            best[name] = min(best[name], (time.perf_counter() - start) / repeats)
    return {name: 2.0 * tokens * d_in * d_out / seconds / 1e9 for name, seconds in best.items()}


def _machine_key() -> str:
    """What the probe's answer depends on: the CPU (model and flags), threads and torch."""
    cpu = platform.processor() or platform.machine()
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
        flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags")), "")
    except OSError:  # not Linux: the model name from platform is all there is
        pass
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{cpu}|flags:{digest}|threads:{torch.get_num_threads()}|torch:{torch.__version__}"


def cache_dir() -> Path:
    """Where machine probes are cached: ``$STEADYTUNE_CACHE`` or ``~/.cache/steadytune``."""
    return Path(os.environ.get("STEADYTUNE_CACHE") or Path.home() / ".cache" / "steadytune")


def probe_cpu(use_cache: bool = True) -> dict[str, Any]:
    """This CPU's fp32 and bf16 matmul rates (GFLOP/s), measured once and cached.

    Args:
        use_cache: read and write the cache (False: always measure, write nothing).

    Returns:
        ``{"machine": key, "fp32_gflops": x, "bf16_gflops": y, "measured_at": unix time}``.
        An unreadable or foreign cache file is ignored and, if writable, replaced.
    """
    key = _machine_key()
    path = cache_dir() / "precision-probe.json"
    cached: dict[str, Any] = {}
    if use_cache:
        try:
            cached = json.loads(path.read_text())
            if isinstance(cached, dict) and isinstance(cached.get(key), dict):
                return cached[key]
        except (OSError, ValueError):
            cached = {}
    rates = _matmul_rates()
    result = {"machine": key, "fp32_gflops": round(rates["fp32"], 1), "bf16_gflops": round(rates["bf16"], 1),
              "measured_at": round(time.time())}
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            entries = cached if isinstance(cached, dict) else {}
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**entries, key: result}, indent=1))
            tmp.replace(path)  # atomic: two workers probing at once never leave half a file
        except OSError:  # a read-only home: the choice is still made, just not remembered
            pass
    return result


def choose_precision(requested: str, device: torch.device, probe: dict[str, Any] | None = None) -> PrecisionChoice:
    """Resolve ``requested`` (``auto``, ``fp32``, ``bf16``) for a run on ``device``.

    Args:
        requested: the configuration's ``precision``.
        device: where the run's tensors live.
        probe: a CPU probe result to use instead of :func:`probe_cpu` (tests, or a
            sweep that probed once).

    Returns:
        The :class:`PrecisionChoice`; an explicit ``fp32``/``bf16`` is used as given.
    """
    if requested != "auto":
        return PrecisionChoice(requested, requested, "set explicitly")
    forced = os.environ.get(FORCE_ENV, "")
    if forced:
        if forced not in ("fp32", "bf16"):
            raise ConfigError(f"{FORCE_ENV}={forced!r} is invalid; use fp32 or bf16 (or unset it)")
        return PrecisionChoice("auto", forced, f"{FORCE_ENV}={forced}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("auto", "bf16", f"CUDA device {torch.cuda.get_device_name(device)} supports bf16")
        return PrecisionChoice("auto", "fp32", f"CUDA device {torch.cuda.get_device_name(device)} lacks bf16")
    if device.type != "cpu":
        return PrecisionChoice("auto", "fp32", f"no bf16 probe for device type {device.type!r}")
    probe = probe or probe_cpu()
    speedup = probe["bf16_gflops"] / probe["fp32_gflops"]
    used = "bf16" if speedup >= CPU_BF16_MIN_SPEEDUP else "fp32"
    verdict = ">=" if used == "bf16" else "<"
    return PrecisionChoice("auto", used, f"CPU bf16 matmul {speedup:.1f}x fp32 ({verdict} {CPU_BF16_MIN_SPEEDUP:g}x)",
                           probe)


__all__ = ["CPU_BF16_MIN_SPEEDUP", "FORCE_ENV", "PrecisionChoice", "cache_dir", "choose_precision", "probe_cpu"]
