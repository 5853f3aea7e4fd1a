"""Reusable pieces of the tssd_fast benchmarks (lif_throughput.py, train_step.py, ...).

    measure(fn, device)          median / p20 / p80 of fn(i) after warm-up: perf_counter on CPU,
                                 CUDA events with an L2 flush before each call on GPU (as
                                 triton.testing.do_bench, which timer='do_bench' uses instead)
    measure_interleaved(fns, device)
                                 the same for several functions timed in interleaved rounds
    copy_bandwidth(device)       GB/s of a large tensor copy (read + write), the "machine limit"
    saved_tensor_bytes(fn)       bytes autograd keeps for backward (unique storages), any device
    saved_tensor_bytes_by_dtype  the same, split by dtype
    peak_memory_bytes(fn)        extra CUDA memory at the peak of one call (None on CPU)
    rotation_sets(...)           how many input sets to rotate so the cache is not measured
    environment(device)          device, versions, git commit, load: the header of every result
    append_csv / write_json      results files (CSV header written once)
    Progress                     a progress line on stderr for long sweeps
    format_table                 plain-text table
    argument_parser, resolve_device, add_timing_args, add_output_args, write_json_and_plot, import_pyplot,
    save_figure, select_names, short_error, free_memory
                                 the command-line pieces the benchmark scripts share

Import it from a script in benchmarks/ as `import harness` (the script's folder is on sys.path)
or as `benchmarks.harness` from the repository root.
"""
import argparse
import contextlib
import csv
import datetime
import gc
import hashlib
import json
import math
import os
import re
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Where a run's rows go by default: untracked (gitignored), so running a benchmark never leaves
# the checkout modified. The committed result files in RESULTS_DIR are written with --csv.
LOCAL_RESULTS_DIR = RESULTS_DIR / "local"


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


@contextlib.contextmanager
def _gc_paused():
    """The garbage collector run, then paused while timing (re-enabled after, if it was)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _warming(calls: int, spent_s: float, opts: TimerOptions) -> bool:
    """Whether warm-up goes on after `calls` calls that took `spent_s` seconds: until
    `warmup_reps` calls and `warmup_s` of them (at most 100 calls to reach the time)."""
    return calls < opts.warmup_reps or (spent_s < opts.warmup_s and calls < 100)


def _enough(calls: int, spent_s: float, opts: TimerOptions) -> bool:
    """Whether `calls` timed calls that took `spent_s` seconds are enough: `max_reps` calls, or
    3 once `max_time_s` is spent, or `min_reps` calls and `min_time_s`."""
    return calls >= opts.max_reps or (calls >= 3 and spent_s >= opts.max_time_s) or (
        calls >= opts.min_reps and spent_s >= opts.min_time_s)


def _flush_buffer(dev: torch.device) -> torch.Tensor:
    """The buffer zeroed before each timed GPU call to evict the L2 cache (as do_bench)."""
    return torch.empty(max(2 * cache_bytes(dev), 256 << 20) // 4, dtype=torch.int32, device=dev)


def _measure_cpu(fn, opts: TimerOptions) -> Timing:
    with _gc_paused():
        i = 0
        t0 = time.perf_counter()
        while _warming(i, time.perf_counter() - t0, opts):
            fn(i)
            i += 1
        warm = i
        samples: List[float] = []
        t_start = time.perf_counter()
        while not _enough(len(samples), time.perf_counter() - t_start, opts):
            a = time.perf_counter()
            fn(i)
            samples.append((time.perf_counter() - a) * 1e3)
            i += 1
    return summarize(samples, warm)


def _measure_cuda_events(fn, device, opts: TimerOptions) -> Timing:
    dev = torch.device(device)
    flush = _flush_buffer(dev)
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
            if not _warming(i, elapsed_s, opts):
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


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def measure_interleaved(fns: Dict[str, Callable[[], object]], device,
                        opts: Optional[TimerOptions] = None,
                        ) -> Dict[str, Union[Timing, BaseException]]:
    """Time every fn() of `fns` in interleaved rounds; returns name -> Timing (median, p20,
    p80 of its per-call times in ms), or the exception that stopped it (the others go on).

    `measure` times one function at a time. When the machine is shared, the load changes during
    a sweep, and a function timed in a quiet minute looks faster than one timed in a busy
    minute. Here every round calls each function once (the order rotated every round), so a
    change of load hits all of them alike and their ratio (the speedup) stays meaningful.
    Per-call timer as `measure`: perf_counter on CPU (garbage collector paused), a CUDA event
    pair on GPU with the L2 cache flushed before each call.

    Warm-up: every fn `opts.warmup_reps` times, in rounds, and on until each had `warmup_s`.
    Then rounds until each fn is done by `measure`'s rule: at least `min_reps` calls and
    `min_time_s` of them (at most `max_reps`; once `max_time_s` is spent, 3 calls are enough).
    A fn that is done leaves the rounds.
    """
    opts = opts or TimerOptions()
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    names = list(fns)
    result: Dict[str, Union[Timing, BaseException]] = {}
    samples: Dict[str, List[float]] = {n: [] for n in names}
    flush = None
    if cuda:
        flush = _flush_buffer(dev)
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

    try:
        with _gc_paused():
            # warm-up
            warm = {n: 0 for n in names}
            warm_ms = {n: 0.0 for n in names}
            rnd = 0
            while True:
                active = [n for n in names
                          if n not in result and _warming(warm[n], warm_ms[n] / 1e3, opts)]
                if not active:
                    break
                for n, ms in run_round(active, rnd).items():
                    warm[n] += 1
                    warm_ms[n] += ms
                rnd += 1
            # timed rounds
            rnd = 0
            while True:
                active = [n for n in names if n not in result
                          and not _enough(len(samples[n]), sum(samples[n]) / 1e3, opts)]
                if not active:
                    break
                for n, ms in run_round(active, rnd).items():
                    samples[n].append(ms)
                rnd += 1
    finally:
        flush = None  # noqa: F841 - frees the flush buffer now
    for n in names:
        if n not in result:
            result[n] = summarize(samples[n], warm[n]) if samples[n] else \
                RuntimeError("no timed call")
    return result


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
    return sum(saved_tensor_bytes_by_dtype(fn, exclude).values())


def saved_tensor_bytes_by_dtype(fn: Callable[[], object],
                                exclude: Iterable[torch.Tensor] = ()) -> Dict[str, int]:
    """saved_tensor_bytes split by the dtype of the saved tensors ('float32', 'uint8', ...):
    a storage is counted once, under the dtype of the first tensor saved from it."""
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    seen: Dict[tuple, tuple] = {}

    def pack(t):
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if st.nbytes() and ptr not in excluded:
            seen.setdefault((str(t.device), ptr), (str(t.dtype).replace("torch.", ""), st.nbytes()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    by: Dict[str, int] = {}
    for dtype, n in seen.values():
        by[dtype] = by.get(dtype, 0) + n
    del out
    return by


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


# ----------------------------------------------------------------------------- command line
def argument_parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A benchmark script's parser (description and epilog printed as written) with --device,
    which resolve_device reads."""
    ap = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto",
                    help="'auto' (cuda when available, else cpu), 'cpu', 'cuda' or 'cuda:N'")
    return ap


def parse_int(text: str) -> int:
    """A count as typed on the command line: 262144, 2^18, 2**18, 256k, 1M."""
    t = text.strip().lower().replace("_", "")
    m = re.fullmatch(r"(\d+)\s*(?:\^|\*\*)\s*(\d+)", t)
    if m:
        return int(m.group(1)) ** int(m.group(2))
    m = re.fullmatch(r"(\d+)([kmg])", t)
    if m:
        return int(m.group(1)) * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]
    return int(t)


def list_arg(conv=str, choices: Optional[Sequence] = None):
    """An argparse type: a comma (or space) separated list, each item through `conv` and, if
    given, one of `choices`."""
    def parse(text):
        try:
            vals = [conv(v) for v in re.split(r"[,\s]+", text.strip()) if v]
        except (ValueError, KeyError) as e:
            raise argparse.ArgumentTypeError(f"cannot parse {text!r}: {e}") from None
        if choices is not None:
            bad = [v for v in vals if v not in choices]
            if bad:
                raise argparse.ArgumentTypeError(
                    f"unknown {', '.join(map(str, bad))} (choose from "
                    f"{', '.join(map(str, choices))})")
        return vals
    return parse


@contextlib.contextmanager
def cudnn_settings(benchmark: bool, deterministic: bool, allow_tf32: Optional[bool] = None):
    """cudnn.benchmark, cudnn.deterministic and (unless None) cudnn.allow_tf32 set for the
    block, the caller's values back after it (process-wide flags, read at each conv call)."""
    cudnn = torch.backends.cudnn
    before = cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32
    cudnn.benchmark, cudnn.deterministic = benchmark, deterministic
    if allow_tf32 is not None:
        cudnn.allow_tf32 = allow_tf32
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32 = before


def resolve_device(name: str) -> torch.device:
    """--device: 'auto' (cuda when available, else cpu) or a torch device name; exits with a
    message when it names CUDA and CUDA is not available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available here (torch "
                         f"{torch.__version__}); use --device cpu")
    return dev


def select_names(wanted: Iterable[str], available: Sequence[str],
                 groups: Dict[str, List[str]], what: str) -> set:
    """The names --providers asks for: each item of `wanted` is one of `available` or a group
    of `groups`; an unknown one exits with the choices (`what`: 'provider', 'neuron')."""
    names = set()
    for w in wanted:
        if w in groups:
            names.update(groups[w])
        elif w in available:
            names.add(w)
        else:
            raise SystemExit(f"--providers: unknown {what} {w!r} on this device; choose from "
                             f"{', '.join(available)} or a group ({', '.join(groups)})")
    return names


def add_timing_args(parser: argparse.ArgumentParser, min_time_help: str, min_reps_help: str,
                    threads_help: str):
    """The 'timing' group: --min-time, --min-reps, --threads, --seed (default 0). Returns the
    group, for the script's own timing options."""
    t = parser.add_argument_group("timing")
    t.add_argument("--min-time", type=float, help=min_time_help)
    t.add_argument("--min-reps", type=int, help=min_reps_help)
    t.add_argument("--threads", type=int, help=threads_help)
    t.add_argument("--seed", type=int, default=0)
    return t


def add_output_args(parser: argparse.ArgumentParser, default_csv, plot_help: str,
                    strict_help: str, csv_when: str = ""):
    """The 'output' group: --json PATH, --csv PATH (default `default_csv`; rows appended
    `csv_when`, e.g. ' after each group'), --no-csv, --plot PATH, --no-progress, --strict.
    Returns the group."""
    default_csv = Path(default_csv)
    try:
        shown = default_csv.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        shown = str(default_csv)
    o = parser.add_argument_group("output")
    o.add_argument("--json", metavar="PATH", help="write environment, config and rows as JSON")
    o.add_argument("--csv", metavar="PATH", default=str(default_csv),
                   help=f"append rows to this CSV{csv_when} (header once); default {shown}")
    o.add_argument("--no-csv", action="store_true", help="do not append to a CSV")
    o.add_argument("--plot", metavar="PATH", help=plot_help)
    o.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    o.add_argument("--strict", action="store_true", help=strict_help)
    return o


def write_json_and_plot(args: argparse.Namespace, payload: Callable[[], object],
                        plot: Callable[[str], Optional[str]]) -> None:
    """--json PATH and --plot PATH of add_output_args: payload() written as JSON, plot(PATH)
    drawn (it returns an error message or None); each announced on stdout, a plot error on
    stderr."""
    if args.json:
        write_json(args.json, payload())
        print(f"JSON written to {args.json}")
    if args.plot:
        err = plot(args.plot)
        print(err or f"plot written to {args.plot}", file=sys.stderr if err else sys.stdout)


def import_pyplot():
    """(matplotlib.pyplot on the Agg backend, None), or (None, the message --plot reports) when
    matplotlib cannot be imported."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return None, f"--plot needs matplotlib ({type(e).__name__}: {e}); pip install matplotlib"
    return plt, None


def save_figure(fig, path) -> None:
    """Lay out `fig`, save it as an image at `path` (creating the folder), close it."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def short_error(e: BaseException, n: int = 160) -> str:
    """'Type: message' of an exception on one line, at most n characters."""
    msg = " ".join(f"{type(e).__name__}: {e}".split())
    return msg if len(msg) <= n else msg[:n - 3] + "..."


def free_memory(device, collect: bool = True) -> None:
    """Run the garbage collector (unless collect=False) and hand cached CUDA memory back."""
    if collect:
        gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


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
        if abs(n) < 1000 or unit == "GiB":  # (1000..1023 would print as 1e+03)
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} GiB"


def fmt_ms(ms: Optional[float]) -> str:
    """Milliseconds with three significant digits ('-' for None)."""
    if ms is None:
        return "-"
    return f"{ms:.3g}" if ms >= 0.01 else f"{ms:.2e}"
