"""Reusable pieces of the tssd_fast benchmarks (lif_throughput.py, train_step.py, ...).

    measure(fn, device)          median / p20 / p80 of fn(i) after warm-up: perf_counter on CPU,
                                 CUDA events with an L2 flush before each call on GPU (as
                                 triton.testing.do_bench, which timer='do_bench' uses instead)
    copy_bandwidth(device)       GB/s of a large tensor copy (read + write), the "machine limit"
    saved_tensor_bytes(fn)       bytes autograd keeps for backward (unique storages), any device
    peak_memory_bytes(fn)        extra CUDA memory at the peak of one call (None on CPU)
    rotation_sets(...)           how many input sets to rotate so the cache is not measured
    environment(device)          device, versions, git commit, load: the header of every result
    append_csv / write_json      results files (CSV header written once)
    Progress                     a progress line on stderr for long sweeps
    format_table                 plain-text table

Import it from a script in benchmarks/ as `import harness` (the script's folder is on sys.path)
or as `benchmarks.harness` from the repository root.
"""
import csv
import datetime
import gc
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Per-call time of a measured function: median and the 20th / 80th percentiles (ms), the
    number of timed calls and the warm-up calls before them."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int
    warmup: int

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between order statistics (numpy's
    default method)."""
    if not values:
        raise ValueError("quantile of an empty sequence")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float], warmup: int = 0) -> Timing:
    """Timing from raw per-call samples in milliseconds."""
    return Timing(quantile(samples_ms, 0.5), quantile(samples_ms, 0.2),
                  quantile(samples_ms, 0.8), len(samples_ms), warmup)


@dataclass
class TimerOptions:
    """How long to measure: at least `min_reps` timed calls and at least `min_time_s` of them
    (at most `max_reps`; and once `max_time_s` is spent, 3 calls are enough), after at least
    `warmup_reps` calls and `warmup_s` of warm-up.
    timer: 'auto' (perf_counter on CPU, CUDA events on GPU), 'events' or 'do_bench' (GPU)."""

    min_reps: int = 5
    max_reps: int = 200
    min_time_s: float = 0.4
    max_time_s: float = 5.0
    warmup_reps: int = 1
    warmup_s: float = 0.05
    timer: str = "auto"


def _is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device) -> None:
    """Wait for the device (no-op on CPU)."""
    if _is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


def cache_bytes(device) -> int:
    """The last-level cache of the device in bytes: the GPU's L2, or the CPU's largest cache
    from sysfs (32 MiB when it cannot be read)."""
    if _is_cuda(device):
        props = torch.cuda.get_device_properties(torch.device(device))
        return int(getattr(props, "L2_cache_size", 0) or 64 << 20)
    best = 0
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for idx in base.glob("index*"):
            text = (idx / "size").read_text().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            num = text[:-1] if text[-1:] in "KMG" else text
            best = max(best, int(num) * mult)
    except (OSError, ValueError):
        pass
    return best or 32 << 20


def rotation_sets(set_bytes: int, device, memory_budget: int, max_sets: int = 16) -> int:
    """How many input sets to rotate through so each call finds its inputs out of cache: enough
    that the sets together are twice the last-level cache, at least 2, at most `max_sets`, and
    within `memory_budget` bytes (at least 1)."""
    if set_bytes <= 0:
        return 1
    want = max(2, math.ceil(2 * cache_bytes(device) / set_bytes))
    fit = max(1, memory_budget // set_bytes)
    return int(max(1, min(want, max_sets, fit)))


def measure(fn: Callable[[int], object], device, opts: Optional[TimerOptions] = None) -> Timing:
    """Time fn(i) (i = 0, 1, 2, ...: the call index, to rotate input sets) after warm-up.

    CPU: time.perf_counter around each call, garbage collector paused while timing.
    GPU: a CUDA event pair around each call and the L2 cache flushed (a buffer zeroed) before
    each, as triton.testing.do_bench does; opts.timer='do_bench' calls do_bench itself
    (return_mode='all') instead. Returns the median and p20 / p80 of the per-call times.
    """
    opts = opts or TimerOptions()
    if _is_cuda(device):
        if opts.timer == "do_bench":
            return _measure_do_bench(fn, opts)
        return _measure_cuda_events(fn, device, opts)
    if opts.timer not in ("auto", "events", "perf_counter"):
        raise ValueError(f"timer {opts.timer!r} is for CUDA devices; use 'auto' on CPU")
    return _measure_cpu(fn, opts)


def _measure_cpu(fn, opts: TimerOptions) -> Timing:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        i = 0
        t0 = time.perf_counter()
        while i < opts.warmup_reps or (time.perf_counter() - t0 < opts.warmup_s and i < 100):
            fn(i)
            i += 1
        warm = i
        samples: List[float] = []
        t_start = time.perf_counter()
        while True:
            spent = time.perf_counter() - t_start
            n = len(samples)
            if n >= opts.max_reps or (n >= 3 and spent >= opts.max_time_s) or (
                    n >= opts.min_reps and spent >= opts.min_time_s):
                break
            a = time.perf_counter()
            fn(i)
            samples.append((time.perf_counter() - a) * 1e3)
            i += 1
    finally:
        if was_enabled:
            gc.enable()
    return summarize(samples, warm)


def _measure_cuda_events(fn, device, opts: TimerOptions) -> Timing:
    dev = torch.device(device)
    flush = torch.empty(max(2 * cache_bytes(dev), 256 << 20) // 4, dtype=torch.int32, device=dev)
    torch.cuda.synchronize(dev)
    # warm-up, timed with events to size the measurement
    i = 0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    while True:
        flush.zero_()
        fn(i)
        i += 1
        if i >= opts.warmup_reps:
            end.record()
            torch.cuda.synchronize(dev)
            elapsed_s = start.elapsed_time(end) / 1e3
            if elapsed_s >= opts.warmup_s or i >= 100:
                break
    warm = i
    est = max(elapsed_s / warm, 1e-6)
    n = int(min(opts.max_reps, max(opts.min_reps, math.ceil(opts.min_time_s / est))))
    n = int(max(3, min(n, math.ceil(opts.max_time_s / est))))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for k in range(n):
        flush.zero_()
        starts[k].record()
        fn(i + k)
        ends[k].record()
    torch.cuda.synchronize(dev)
    del flush
    return summarize([s.elapsed_time(e) for s, e in zip(starts, ends)], warm)


def _measure_do_bench(fn, opts: TimerOptions) -> Timing:
    from triton.testing import do_bench
    counter = [0]

    def call():
        fn(counter[0])
        counter[0] += 1

    samples = do_bench(call, warmup=max(1, int(opts.warmup_s * 1e3)),
                       rep=max(1, int(opts.min_time_s * 1e3)), return_mode="all")
    return summarize(list(samples), opts.warmup_reps)


def copy_bandwidth(device, nbytes: Optional[int] = None,
                   opts: Optional[TimerOptions] = None) -> Dict[str, float]:
    """The device's copy bandwidth: a large dst.copy_(src) timed with `measure`, counted as
    read + write (2 * nbytes per copy). Default size: 1 GiB on GPU (at most a tenth of the
    free memory), 256 MiB on CPU (at most a twentieth of the RAM), and at least 8x the cache.
    Returns {'GBps', 'GBps_p20', 'GBps_p80', 'bytes'} (p20 of time = p80 of bandwidth)."""
    dev = torch.device(device)
    if nbytes is None:
        if dev.type == "cuda":
            default, limit = 1 << 30, torch.cuda.mem_get_info(dev)[0] // 10
        else:
            default, limit = 256 << 20, _total_ram() // 20
        nbytes = min(max(default, 8 * cache_bytes(dev)), limit)
    n = max(1, nbytes // 4)
    src = torch.ones(n, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    t = measure(lambda i: dst.copy_(src), dev, opts or TimerOptions(min_reps=10, min_time_s=0.3))
    moved = 2 * n * 4
    return {"GBps": moved / t.median_ms / 1e6, "GBps_p20": moved / t.p80_ms / 1e6,
            "GBps_p80": moved / t.p20_ms / 1e6, "bytes": moved}


def _total_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def memory_budget(device, fraction: float = 0.25) -> int:
    """Bytes a benchmark may spend on input sets: a fraction of the free GPU memory, or of the
    RAM (at most 2 GiB on CPU)."""
    if _is_cuda(device):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * fraction)
    return int(min(_total_ram() * fraction, 2 << 30))


# ----------------------------------------------------------------------------------- memory
def saved_tensor_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes autograd keeps for backward while fn()'s outputs are alive: the unique storages of
    every tensor saved for backward (torch.autograd.graph.saved_tensors_hooks), whatever the
    device, excluding the storages of `exclude` (the inputs the caller holds anyway)."""
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    seen: Dict[tuple, int] = {}

    def pack(t):
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if st.nbytes() and ptr not in excluded:
            seen[(str(t.device), ptr)] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    total = sum(seen.values())
    del out
    return total


def peak_memory_bytes(fn: Callable[[], object], device) -> Optional[int]:
    """Extra memory allocated at the peak of one fn() call above what was allocated before it
    (CUDA caching allocator); None on CPU, which has no such counter."""
    if not _is_cuda(device):
        return None
    dev = torch.device(device)
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    out = fn()
    torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev) - base
    del out
    return int(peak)


# ------------------------------------------------------------------------------ environment
def _version(dist: str, module: Optional[str] = None) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001 - not installed, or installed without metadata
        pass
    try:
        return getattr(__import__(module or dist), "__version__", "unknown")
    except Exception:  # noqa: BLE001
        return None


def git_commit(path: Path = REPO_ROOT) -> str:
    """Short commit of the checkout at `path`, '+dirty' when tracked files changed, or
    'unknown' (not a git checkout, git missing)."""
    def run(*a):
        return subprocess.run(["git", "-C", str(path), *a], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = run("rev-parse", "--short=12", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no")
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_name() -> str:
    """The CPU model name ('model name' of /proc/cpuinfo, else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device) -> str:
    """A readable name of the device: the GPU's name, or the CPU model and core count."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_name()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def environment(device) -> Dict[str, object]:
    """Everything a result needs to be compared later: timestamp (UTC), device, versions
    (python, torch, CUDA, triton, spikingjelly, tssd_fast), git commit, and the 1-minute load
    average at the start (a busy CPU makes timings slower and noisier)."""
    dev = torch.device(device)
    env: Dict[str, object] = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": str(dev),
        "device_name": device_name(dev),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if dev.type == "cuda" else None,
        "triton": _version("triton"),
        "spikingjelly": _version("spikingjelly"),
        "tssd_fast": _version("tssd_fast") or _tssd_version(),
        "commit": git_commit(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        env["loadavg_1min"] = round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        env["loadavg_1min"] = None
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env["gpu_memory_GiB"] = round(props.total_memory / 2 ** 30, 1)
        env["capability"] = f"{props.major}.{props.minor}"
    return env


def _tssd_version() -> str:
    try:
        import tssd_fast
        return tssd_fast.__version__
    except Exception:  # noqa: BLE001
        return "unknown"


def environment_header(env: Dict[str, object]) -> str:
    """The environment as two or three readable lines."""
    lines = [f"device: {env['device_name']} [{env['device']}]"
             + (f", {env.get('gpu_memory_GiB')} GiB, sm {env.get('capability')}, CUDA "
                f"{env.get('cuda')}" if env.get("cuda") else ""),
             f"torch {env['torch']}, triton {env['triton'] or '-'}, spikingjelly "
             f"{env['spikingjelly'] or '-'}, tssd_fast {env['tssd_fast']}, python "
             f"{env['python']}, commit {env['commit']}, {env['timestamp']}"]
    load = env.get("loadavg_1min")
    if load is not None and str(env["device"]) == "cpu":
        busy = (" -- other processes are using the CPU: timings are slower and noisier, and "
                "multi-threaded ops stall when a core is taken (--threads 1 avoids that)") \
            if load > 0.5 * (env.get("cores") or 1) else ""
        lines.append(f"load average (1 min) at start: {load}{busy}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- outputs
def append_csv(path, rows: List[Dict[str, object]], fields: Sequence[str]) -> Path:
    """Append rows to a CSV, writing the header only when the file is new. If the file exists
    with another header (an older version of the benchmark), rows go to a sibling file named
    after a hash of the new header instead, so columns never mix. Returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(fields)
    if path.exists() and path.stat().st_size > 0:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != fields:
            tag = hashlib.sha1(",".join(fields).encode()).hexdigest()[:8]
            path = path.with_name(f"{path.stem}.{tag}{path.suffix}")
            return append_csv(path, rows, fields) if path.exists() else _write_csv(
                path, rows, fields, header=True)
        return _write_csv(path, rows, fields, header=False)
    return _write_csv(path, rows, fields, header=True)


def _write_csv(path: Path, rows, fields, header: bool) -> Path:
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if header:
            w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return path


def write_json(path, payload: object) -> Path:
    """Write payload as indented JSON (creating the folder)."""
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path


class Progress:
    """A progress line on stderr: `step(desc)` before each item shows [i/total], elapsed time,
    an estimate of the time left and the item. On a terminal the line is rewritten in place;
    otherwise a line is printed every tenth of the sweep (and at most every 30 s)."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.total = max(1, total)
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.i = 0
        self.t0 = time.perf_counter()
        self._last_print = -1.0
        self._last_tenth = -1

    def step(self, desc: str) -> None:
        self.i += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        done = self.i - 1
        eta = f", ~{_fmt_s(elapsed / done * (self.total - done))} left" if done else ""
        line = f"[{self.i}/{self.total}] {_fmt_s(elapsed)}{eta} | {desc}"
        if self.tty:
            self.stream.write("\r" + line[:118].ljust(118))
            self.stream.flush()
        else:
            tenth = 10 * done // self.total
            if tenth != self._last_tenth or elapsed - self._last_print > 30:
                self._last_tenth, self._last_print = tenth, elapsed
                self.stream.write(line + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            msg = f"done: {self.i} items in {_fmt_s(time.perf_counter() - self.t0)}"
            self.stream.write(("\r" + msg.ljust(118) + "\n") if self.tty else msg + "\n")
            self.stream.flush()


def _fmt_s(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{int(s // 60)}m{int(s % 60):02d}s"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                 right: Iterable[int] = ()) -> str:
    """A plain-text table; columns whose index is in `right` are right-aligned."""
    right = set(right)
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) if any(r) else "" for r in cells[1:]]
    return "\n".join(out)


def fmt_bytes(n: Optional[float]) -> str:
    """Bytes in binary units (B, KiB, MiB, GiB), '-' for None."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} GiB"


def fmt_ms(ms: Optional[float]) -> str:
    """Milliseconds with three significant digits ('-' for None)."""
    if ms is None:
        return "-"
    return f"{ms:.3g}" if ms >= 0.01 else f"{ms:.2e}"
