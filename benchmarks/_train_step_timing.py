"""Interleaved timing for benchmarks/train_step.py (a candidate for benchmarks/harness.py).

harness.measure times one function at a time. When the machine is shared, the load changes
during a sweep, and a provider timed in a quiet minute looks faster than one timed in a busy
minute. measure_interleaved times several functions in rounds instead (one call of each per
round, the order rotated every round), so a change of load hits all of them alike and their
ratio (the speedup) stays meaningful. Per-call timer as harness.measure: perf_counter on CPU
(garbage collector paused), a CUDA event pair on GPU with the L2 cache flushed before each call.
"""
import gc
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness
else:
    from . import harness


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def measure_interleaved(fns: Dict[str, Callable[[], object]], device,
                        opts: Optional[harness.TimerOptions] = None,
                        ) -> Dict[str, Union[harness.Timing, BaseException]]:
    """Time every fn() of `fns` in interleaved rounds; returns name -> Timing (median, p20,
    p80 of its per-call times in ms), or the exception that stopped it (the others go on).

    Warm-up: every fn `opts.warmup_reps` times, in rounds, and on until each had `warmup_s`.
    Then rounds until each fn is done by harness.measure's rule: at least `min_reps` calls and
    `min_time_s` of them (at most `max_reps`; once `max_time_s` is spent, 3 calls are enough).
    A fn that is done leaves the rounds.
    """
    opts = opts or harness.TimerOptions()
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    names = list(fns)
    result: Dict[str, Union[harness.Timing, BaseException]] = {}
    samples: Dict[str, List[float]] = {n: [] for n in names}
    flush = None
    if cuda:
        flush = torch.empty(max(2 * harness.cache_bytes(dev), 256 << 20) // 4,
                            dtype=torch.int32, device=dev)
        torch.cuda.synchronize(dev)

    def call_timed(name: str) -> Optional[tuple]:
        """One call; CPU: its ms; CUDA: its event pair (read after the round's sync)."""
        oom = False
        try:
            if cuda:
                flush.zero_()
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fns[name]()
                b.record()
                return (a, b)
            t0 = time.perf_counter()
            fns[name]()
            return ((time.perf_counter() - t0) * 1e3,)
        except Exception as e:  # noqa: BLE001 - one failing fn must not stop the others
            # keep a copy without the traceback, whose frames would hold the step's tensors
            result[name] = RuntimeError(f"{type(e).__name__}: {e}")
            oom = _is_oom(e)
        if cuda and oom:
            torch.cuda.empty_cache()
        return None

    def run_round(active: List[str], rnd: int) -> Dict[str, float]:
        k = rnd % len(active)
        order = active[k:] + active[:k]
        got = {}
        for n in order:
            if n in result:
                continue
            r = call_timed(n)
            if r is not None:
                got[n] = r
        if cuda:
            torch.cuda.synchronize(dev)
            return {n: a.elapsed_time(b) for n, (a, b) in got.items()}
        return {n: r[0] for n, r in got.items()}

    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        # warm-up
        warm = {n: 0 for n in names}
        warm_ms = {n: 0.0 for n in names}
        rnd = 0
        while True:
            active = [n for n in names if n not in result and (
                warm[n] < opts.warmup_reps or (warm_ms[n] < opts.warmup_s * 1e3 and warm[n] < 100))]
            if not active:
                break
            for n, ms in run_round(active, rnd).items():
                warm[n] += 1
                warm_ms[n] += ms
            rnd += 1
        # timed rounds
        rnd = 0
        while True:
            active = []
            for n in names:
                if n in result:
                    continue
                s = samples[n]
                spent = sum(s) / 1e3
                done = len(s) >= opts.max_reps or (len(s) >= 3 and spent >= opts.max_time_s) \
                    or (len(s) >= opts.min_reps and spent >= opts.min_time_s)
                if not done:
                    active.append(n)
            if not active:
                break
            for n, ms in run_round(active, rnd).items():
                samples[n].append(ms)
            rnd += 1
    finally:
        if was_enabled:
            gc.enable()
        flush = None  # noqa: F841 - frees the flush buffer now
    for n in names:
        if n not in result:
            result[n] = harness.summarize(samples[n], warm[n]) if samples[n] else \
                RuntimeError("no timed call")
    return result


def spread_pct(t: harness.Timing) -> float:
    """(p80 - p20) / median in %: how noisy a timing is."""
    return 100.0 * (t.p80_ms - t.p20_ms) / t.median_ms if t.median_ms else math.nan
