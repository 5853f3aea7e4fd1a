#!/usr/bin/env python
"""LIF throughput: every LIF implementation on this machine against the pure-PyTorch neuron.

    python benchmarks/lif_throughput.py            # the default sweep for this device
    python benchmarks/lif_throughput.py --quick    # a few points, seconds
    python benchmarks/lif_throughput.py --list     # which implementations run here, and why not

For each point (mode, T, N, dtype) every provider (see --list) is first run once and checked
against the reference ('torch': tssd_fast's autograd loop) -- spikes, v_last and, in training
mode, grad_x -- and only a provider that agrees is timed; one that does not is reported 'wrong'.

Modes: 'infer' = forward under torch.no_grad(); 'train' = forward, then backward with a given
grad tensor through torch.autograd.grad (nothing accumulates into .grad). Timing: median and
p20 / p80 of per-call times after warm-up (perf_counter on CPU; CUDA events with the L2 cache
flushed before each call on GPU), input sets rotated so their data is not in cache.

Columns: GB/s is the effective bandwidth of the bytes the mode must move (benchmarks/_bytes.py:
x, spikes, v_last, saved tensors and gradients, each once; every call starts from the default
state, so there is no v0 to read), %copy its ratio to the copy
bandwidth measured in the same run; speedup = reference median / provider median; saved = bytes
autograd keeps for backward (unique storages, the input excluded); peak = extra CUDA memory at
the peak of one call (GPU only).

torch.compile providers ('torch-compile', 'sj-inductor') compile once per shape and mode; their
compile time is the '1st call' column. On CPU they are off by default (tens of seconds per
shape on a small CPU; --compile turns them on); on GPU they run within --compile-budget.

Results: a table on stdout, rows appended to benchmarks/results/local/lif_throughput.csv
(untracked, so a run leaves the checkout clean; --csv PATH appends elsewhere, e.g. to the
committed benchmarks/results/lif_throughput.csv; --no-csv), --json PATH, --plot PATH (PNG;
needs matplotlib).
"""
import argparse
import dataclasses
import math
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _bytes
    import _providers as P
    import harness
else:
    from . import _bytes, harness
    from . import _providers as P

import torch

DTYPES = OrderedDict([("fp32", torch.float32), ("bf16", torch.bfloat16),
                      ("fp16", torch.float16), ("fp64", torch.float64)])
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MODES = ("infer", "train")

# Correctness guard: at most this fraction of spikes may differ from the reference (threshold
# ties decided differently after a reassociated or FMA-contracted add); v_last and grad_x are
# compared on the neurons whose spike trains agree, within (atol, rtol) of the storage dtype,
# and may exceed it on at most this fraction of elements (Rect window edges hit the same way).
MISMATCH_FRACTION = 1e-4
TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.float64: (1e-9, 1e-9),
             torch.float16: (1e-2, 1e-2), torch.bfloat16: (6e-2, 6e-2)}
X_MEAN, X_STD = 0.5, 1.0  # input current: about a third of the neuron-steps fire

CSV_FIELDS = ["timestamp", "device", "device_name", "commit", "torch", "triton", "spikingjelly",
              "tssd_fast", "loadavg_1min", "neuron", "provider", "mode", "T", "N", "dtype", "median_ms", "p20_ms",
              "p80_ms", "reps", "bytes", "GBps", "pct_copy_bw", "copy_GBps", "speedup",
              "saved_bytes", "peak_bytes", "first_call_s", "status"]
DEFAULT_CSV = harness.LOCAL_RESULTS_DIR / "lif_throughput.csv"  # untracked; see harness


# ---------------------------------------------------------------------------------- inputs
class Outputs(NamedTuple):
    """What the guard compares: spikes [T, N], v_last [N], grad_x [T, N] (train only)."""

    spikes: torch.Tensor
    v_last: torch.Tensor
    grad_x: Optional[torch.Tensor]


class InputSet(NamedTuple):
    x: torch.Tensor        # leaf, requires_grad (train)
    x_infer: torch.Tensor  # the same storage, no grad (infer)
    grad: torch.Tensor     # dL/dspikes


def make_inputs(T: int, N: int, dtype: torch.dtype, device, count: int,
                seed: int = 0) -> List[InputSet]:
    """`count` independent input sets x ~ N(X_MEAN, X_STD) [T, N] and grad ~ N(0, 1)."""
    sets = []
    for j in range(count):
        g = torch.Generator(device=device).manual_seed(seed * 1000 + j)
        x = (torch.randn((T, N), generator=g, device=device) * X_STD + X_MEAN).to(dtype)
        grad = torch.randn((T, N), generator=g, device=device).to(dtype)
        sets.append(InputSet(x.requires_grad_(), x.detach(), grad))
    return sets


def call(runner, mode: str, inp: InputSet, keep: bool = False):
    """One call of `mode` on one input set: infer = forward under no_grad; train = forward then
    torch.autograd.grad with inp.grad. Returns Outputs when keep, else None."""
    if mode == "infer":
        with torch.no_grad():
            s, v = runner(inp.x_infer)
        return Outputs(s, v, None) if keep else None
    s, v = runner(inp.x)
    (gx,) = torch.autograd.grad(s, inp.x, inp.grad)
    return Outputs(s.detach(), v.detach(), gx) if keep else None


# ----------------------------------------------------------------------------------- guard
def compare(ref: Outputs, got: Outputs, dtype: torch.dtype) -> Optional[str]:
    """None when `got` agrees with the reference, else what differs (see MISMATCH_FRACTION and
    TOLERANCE)."""
    s_ref, s = ref.spikes, got.spikes
    if tuple(s.shape) != tuple(s_ref.shape):
        return f"spikes have shape {tuple(s.shape)}, expected {tuple(s_ref.shape)}"
    s, s_ref = s.float(), s_ref.float()
    if not torch.isfinite(s).all():
        return "spikes are not finite"
    if not ((s == 0) | (s == 1)).all():
        return "spikes are not 0/1"
    differ = s != s_ref
    frac = differ.float().mean().item() if differ.numel() else 0.0
    if frac > MISMATCH_FRACTION:
        return f"{frac:.3g} of the spikes differ from the reference"
    same = ~differ.any(0) if differ.dim() > 1 else ~differ  # neurons whose spike trains agree
    atol, rtol = TOLERANCE[dtype]
    checks = [("v_last", ref.v_last, got.v_last, same)]
    if ref.grad_x is not None:
        if got.grad_x is None:
            return "no grad_x"
        checks.append(("grad_x", ref.grad_x, got.grad_x, same))
    for name, a, b, mask in checks:
        if tuple(a.shape) != tuple(b.shape):
            return f"{name} has shape {tuple(b.shape)}, expected {tuple(a.shape)}"
        a, b = a.float(), b.float()
        if not torch.isfinite(b).all():
            return f"{name} is not finite"
        a, b = (a[:, mask], b[:, mask]) if a.dim() > 1 else (a[mask], b[mask])
        if a.numel() == 0:
            continue
        bad = ~torch.isclose(b, a, atol=atol, rtol=rtol)
        bad_frac = bad.float().mean().item()
        if bad_frac > MISMATCH_FRACTION:
            err = (b - a).abs().max().item()
            return (f"{name} differs from the reference at {bad_frac:.3g} of the elements "
                    f"(max |diff| {err:.3g}, atol {atol:g}, rtol {rtol:g})")
    return None


# ----------------------------------------------------------------------------------- sweep
class SweepOptions(NamedTuple):
    timer: harness.TimerOptions
    compile_budget_s: float = math.inf
    seed: int = 0
    memory_fraction: float = 0.25


class Sweep:
    """Runs every provider at every point; keeps the state that spans points (the compile
    budget spent, providers whose compile failed)."""

    def __init__(self, providers: Sequence[P.Provider], built: Dict[str, object], cfg,
                 device, opts: SweepOptions, copy_GBps: Optional[float] = None,
                 progress: Optional[harness.Progress] = None):
        self.providers = list(providers)
        self.built = built  # name -> Runner, or the skip reason (str)
        self.cfg = cfg
        self.device = torch.device(device)
        self.opts = opts
        self.copy_GBps = copy_GBps
        self.progress = progress
        self.compile_spent_s: Dict[str, float] = {}  # per compile provider
        self.sticky: Dict[str, str] = {}
        self._n_sets = None

    def run(self, Ts, Ns, dtypes, modes) -> List[dict]:
        rows = []
        for dtype in dtypes:
            for T in Ts:
                for N in Ns:
                    rows += self.run_shape(T, N, dtype, modes)
        return rows

    def run_shape(self, T: int, N: int, dtype, modes) -> List[dict]:
        io = torch.tensor([], dtype=dtype).element_size()
        # rotate enough sets that even the inference mode, which reads only x, finds it out of
        # cache (each set holds x and grad)
        budget = harness.memory_budget(self.device, self.opts.memory_fraction)
        count = harness.rotation_sets(T * N * io, self.device, budget // 2)
        self._n_sets = count
        rows = []
        try:
            sets = make_inputs(T, N, dtype, self.device, count, self.opts.seed)
            ref_runner = self.built[P.REFERENCE]
            if isinstance(ref_runner, str):
                raise RuntimeError(f"the reference is unavailable: {ref_runner}")
            ref = call(ref_runner, "train", sets[0], keep=True)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: report the point, go on
            for mode in modes:
                for p in self.providers:
                    self._tick(mode, T, N, dtype, p.name)
                    rows.append(self._row(p, mode, T, N, dtype,
                                          status=f"error: inputs/reference failed: "
                                                 f"{harness.short_error(e)}"))
            harness.free_memory(self.device)
            return rows
        for mode in modes:
            ref_out = ref if mode == "train" else Outputs(ref.spikes, ref.v_last, None)
            nbytes = _bytes.lif_bytes(mode, T, N, io, self.cfg.saves_window_bits,
                                      4 if dtype != torch.float64 else 8)
            group = []
            for p in self.providers:
                self._tick(mode, T, N, dtype, p.name)
                group.append(self.run_point(p, mode, T, N, dtype, sets, ref_out, nbytes))
                harness.free_memory(self.device, collect=False)
            ref_ms = group[0]["median_ms"] if group and group[0]["provider"] == P.REFERENCE \
                else None
            for r in group:
                if ref_ms and r["median_ms"]:
                    r["speedup"] = ref_ms / r["median_ms"]
            rows += group
        del sets, ref
        harness.free_memory(self.device)
        return rows

    def _spend(self, name: str, seconds: float) -> None:
        self.compile_spent_s[name] = self.compile_spent_s.get(name, 0.0) + seconds

    def _tick(self, mode, T, N, dtype, name):
        if self.progress is not None:
            self.progress.step(f"{mode} T={T} N={N} {DTYPE_NAMES[dtype]} {name}")

    def _row(self, p, mode, T, N, dtype, status, **kw) -> dict:
        row = {"provider": p.name, "kind": p.kind, "mode": mode, "T": T, "N": N,
               "dtype": DTYPE_NAMES[dtype], "median_ms": None, "p20_ms": None, "p80_ms": None,
               "reps": None, "warmup": None, "bytes": None, "GBps": None, "pct_copy_bw": None,
               "copy_GBps": self.copy_GBps, "speedup": None, "saved_bytes": None,
               "peak_bytes": None, "first_call_s": None, "input_sets": self._n_sets,
               "status": status}
        row.update(kw)
        return row

    def run_point(self, p: P.Provider, mode: str, T: int, N: int, dtype, sets: List[InputSet],
                  ref: Outputs, nbytes: int) -> dict:
        """Check one provider at one point against the reference; time it only if it agrees."""
        runner = self.built.get(p.name)
        if isinstance(runner, str):
            return self._row(p, mode, T, N, dtype, f"skipped: {runner}", bytes=nbytes)
        if p.name in self.sticky:
            return self._row(p, mode, T, N, dtype, self.sticky[p.name], bytes=nbytes)
        if dtype not in p.dtypes:
            return self._row(p, mode, T, N, dtype,
                             f"skipped: no {DTYPE_NAMES[dtype]} support", bytes=nbytes)
        compiles = p.kind in P.COMPILE_KINDS
        if compiles and self.compile_spent_s.get(p.name, 0.0) >= self.opts.compile_budget_s:
            return self._row(p, mode, T, N, dtype,
                             f"skipped: compile budget ({self.opts.compile_budget_s:g} s) "
                             f"spent; raise --compile-budget", bytes=nbytes)
        # 1. the guard: first call, checked against the reference
        t0 = time.perf_counter()
        try:
            runner.activate()
            out = call(runner, mode, sets[0], keep=True)
            harness.synchronize(self.device)
            first_s = time.perf_counter() - t0
        except P.Skip as e:
            return self._row(p, mode, T, N, dtype, f"skipped: {e}", bytes=nbytes)
        except Exception as e:  # noqa: BLE001 - a failing provider is reported, not fatal
            if p.kind == "spikingjelly" and P.SJ_PROFILE_REFUSED in str(e):
                return self._row(p, mode, T, N, dtype, f"skipped: spikingjelly: {harness.short_error(e)}",
                                 bytes=nbytes)
            if compiles:
                self._spend(p.name, time.perf_counter() - t0)
                self.sticky[p.name] = f"skipped: torch.compile failed: {harness.short_error(e)}"
                return self._row(p, mode, T, N, dtype, self.sticky[p.name], bytes=nbytes)
            harness.free_memory(self.device)
            return self._row(p, mode, T, N, dtype, f"error: {harness.short_error(e)}", bytes=nbytes)
        if compiles:
            self._spend(p.name, first_s)
        wrong = None if p.kind == "reference" else compare(ref, out, dtype)
        del out
        if wrong is not None:
            hint = p.hint(dtype) if p.hint else None
            wrong = f"{wrong} ({hint})" if hint else wrong
            return self._row(p, mode, T, N, dtype, f"wrong: {wrong}", bytes=nbytes,
                             first_call_s=first_s)
        # 2. timing, input sets rotated
        n_sets = len(sets)
        try:
            t = harness.measure(lambda i: call(runner, mode, sets[i % n_sets]), self.device,
                                self.opts.timer)
        except Exception as e:  # noqa: BLE001
            harness.free_memory(self.device)
            return self._row(p, mode, T, N, dtype, f"error while timing: {harness.short_error(e)}",
                             bytes=nbytes, first_call_s=first_s)
        # 3. memory: saved for backward (any device), peak (CUDA)
        saved = peak = None
        if mode == "train":
            try:
                saved = harness.saved_tensor_bytes(lambda: runner(sets[0].x),
                                                   exclude=[sets[0].x])
            except Exception:  # noqa: BLE001 - e.g. hooks a compiled graph refuses: n/a
                saved = None
        try:
            peak = harness.peak_memory_bytes(lambda: call(runner, mode, sets[0]), self.device)
        except Exception:  # noqa: BLE001
            peak = None
        gbps = nbytes / t.median_ms / 1e6
        return self._row(p, mode, T, N, dtype, "ok", median_ms=t.median_ms, p20_ms=t.p20_ms,
                         p80_ms=t.p80_ms, reps=t.reps, warmup=t.warmup, bytes=nbytes, GBps=gbps,
                         pct_copy_bw=100 * gbps / self.copy_GBps if self.copy_GBps else None,
                         saved_bytes=saved, peak_bytes=peak, first_call_s=first_s)


def _sig(v, digits: int = 5):
    """Floats to `digits` significant digits (CSV readability); anything else unchanged."""
    return float(f"{v:.{digits}g}") if isinstance(v, float) and math.isfinite(v) else v


def build_providers(providers: Sequence[P.Provider], cfg, device, compile_reason: Optional[str],
                    explicit: Sequence[str] = ()) -> Dict[str, object]:
    """name -> Runner, or the reason it is skipped. compile_reason: why compile providers are
    off (None: on); `explicit`: names the user asked for (turns them on regardless)."""
    built: Dict[str, object] = {}
    for p in providers:
        if p.kind in P.COMPILE_KINDS and compile_reason and p.name not in explicit:
            built[p.name] = compile_reason
            continue
        if p.name == "triton" and P.interpreted_triton(device) and p.name not in explicit:
            built[p.name] = ("TRITON_INTERPRET=1 would run it through the Triton interpreter (a "
                             "test mode, far slower); pass --providers triton to time it anyway")
            continue
        try:
            built[p.name] = p.build(cfg, torch.device(device))
        except P.Skip as e:
            built[p.name] = str(e)
        except Exception as e:  # noqa: BLE001
            built[p.name] = f"failed to set up: {harness.short_error(e)}"
    return built


# ----------------------------------------------------------------------------------- report
def render_table(rows: List[dict], built: Dict[str, object], device) -> str:
    """The stdout table: one line per provider and point (providers skipped everywhere are
    listed once below), a blank line between points."""
    cuda = torch.device(device).type == "cuda"
    skipped_everywhere = {n for n, b in built.items() if isinstance(b, str)}
    headers = ["mode", "dtype", "T", "N", "provider", "median ms", "p20-p80 ms", "GB/s",
               "%copy", "speedup", "saved", *(["peak"] if cuda else []), "1st call s", "status"]
    table, last = [], None
    for r in rows:
        if r["provider"] in skipped_everywhere:
            continue
        key = (r["mode"], r["dtype"], r["T"], r["N"])
        if last is not None and key != last:
            table.append([""] * len(headers))
        last = key
        ok = r["status"] == "ok"
        table.append([
            r["mode"], r["dtype"], r["T"], r["N"], r["provider"],
            harness.fmt_ms(r["median_ms"]) if ok else "-",
            f"{harness.fmt_ms(r['p20_ms'])}-{harness.fmt_ms(r['p80_ms'])}" if ok else "-",
            f"{r['GBps']:.3g}" if ok else "-",
            _pct(r["pct_copy_bw"]) if ok else "-",
            f"{r['speedup']:.2f}x" if r["speedup"] else "-",
            harness.fmt_bytes(r["saved_bytes"]) if r["mode"] == "train" else "-",
            *([harness.fmt_bytes(r["peak_bytes"])] if cuda else []),
            f"{r['first_call_s']:.2f}" if r["first_call_s"] is not None else "-",
            r["status"] if len(r["status"]) <= 70 else r["status"][:67] + "...",
        ])
    right = {2, 3, 5, 6, 7, 8, 9, 10, 11, 12} if cuda else {2, 3, 5, 6, 7, 8, 9, 10, 11}
    return harness.format_table(headers, table, right)


def _pct(p: Optional[float]) -> str:
    if p is None:
        return "-"
    return f"{p:.0f}%" if p >= 10 else f"{p:.2g}%"


def _memory_phrase(ratios: List[float]) -> str:
    """ratios: reference saved bytes / provider saved bytes, over points."""
    lo, hi = min(ratios), max(ratios)
    rng = f"{lo:.3g}x" if hi - lo <= 0.05 * hi else f"{lo:.3g}x-{hi:.3g}x"
    if 0.95 <= lo and hi <= 1.05:
        return "saves as much as the reference for backward"
    if lo > 1:
        return f"saves {rng} less than the reference for backward"
    inv = [1 / r for r in ratios]
    rng = f"{min(inv):.3g}x" if max(inv) - min(inv) <= 0.05 * max(inv) else \
        f"{min(inv):.3g}x-{max(inv):.3g}x"
    return f"saves {rng} more than the reference for backward"


def _bandwidth_phrase(best: dict) -> str:
    """The provider's best share of copy bandwidth, and what that leaves: no implementation of
    the op, moving at least its minimum bytes, can be more than 100 / %copy times faster than
    it there (the bound a speedup target against this provider has to fit under). Above 100%,
    part of the traffic came from cache, and the copy bandwidth bounds nothing."""
    pct = best["pct_copy_bw"]
    if pct >= 100:  # part of the traffic hit cache: copy bandwidth bounds nothing there
        return f"up to {_pct(pct)} of copy bandwidth (part of it from cache)"
    return (f"up to {_pct(pct)} of copy bandwidth ({best['dtype']} T={best['T']}: no kernel "
            f"can beat it by more than {100 / pct:.2f}x there)")


def render_summary(rows: List[dict]) -> str:
    """Per mode and provider: the geometric-mean speedup over the points it ran (min-max),
    the best fraction of copy bandwidth, and its activation memory against the reference's;
    for our kernels, every point where they were slower than the reference."""
    lines = []
    for mode in MODES:
        ok = [r for r in rows if r["mode"] == mode and r["status"] == "ok"]
        if not ok:
            continue
        lines.append(f"{mode}:")
        ref_saved = {(r["T"], r["N"], r["dtype"]): r["saved_bytes"] for r in ok
                     if r["provider"] == P.REFERENCE}
        for name in OrderedDict.fromkeys(r["provider"] for r in ok):
            mine = [r for r in ok if r["provider"] == name]
            sp = [r["speedup"] for r in mine if r["speedup"]]
            parts = [f"{len(mine)} point{'s' if len(mine) > 1 else ''}"]
            if sp and name != P.REFERENCE:
                gm = math.exp(sum(math.log(s) for s in sp) / len(sp))
                parts.append(f"speedup {gm:.2f}x" if len(sp) == 1 else
                             f"speedup {gm:.2f}x (geo-mean; {min(sp):.2f}x-{max(sp):.2f}x)")
            bw = [r for r in mine if r["pct_copy_bw"] is not None]
            if bw:
                parts.append(_bandwidth_phrase(max(bw, key=lambda r: r["pct_copy_bw"])))
            ratios = [ref_saved[(r["T"], r["N"], r["dtype"])] / r["saved_bytes"] for r in mine
                      if r["saved_bytes"] and ref_saved.get((r["T"], r["N"], r["dtype"]))]
            if ratios and name != P.REFERENCE:
                parts.append(_memory_phrase(ratios))
            text = f"  {name:<14}" + ", ".join(parts)
            lines.append(text)
            slow = [r for r in mine if r.get("kind") == "tssd" and r["speedup"] is not None
                    and r["speedup"] < 1]
            if slow:  # one of our kernels losing to the loop it replaces is a defect to report
                where = ", ".join(f"{r['dtype']} T={r['T']} N={r['N']} ({r['speedup']:.2f}x)"
                                  for r in slow)
                lines.append(f"  {'':<14}SLOWER than the reference at {len(slow)} of "
                             f"{len(mine)} points: {where}")
    return "\n".join(lines)


def write_plot(path, rows: List[dict]) -> Optional[str]:
    """Speedup and % of copy bandwidth against T (largest N, one line per provider and dtype),
    one row of panels per mode. Returns an error message instead of raising."""
    plt, err = harness.import_pyplot()
    if err:
        return err
    import matplotlib.ticker
    ok = [r for r in rows if r["status"] == "ok"]
    modes = [m for m in MODES if any(r["mode"] == m for r in ok)]
    if not modes:
        return "--plot: no measured points to plot"
    fig, axes = plt.subplots(len(modes), 2, figsize=(11, 3.6 * len(modes)), squeeze=False)
    for i, mode in enumerate(modes):
        mine = [r for r in ok if r["mode"] == mode]
        n_max = max(r["N"] for r in mine)
        for (name, dt) in OrderedDict.fromkeys((r["provider"], r["dtype"]) for r in mine):
            pts = sorted((r["T"], r["speedup"], r["pct_copy_bw"]) for r in mine
                         if r["provider"] == name and r["dtype"] == dt and r["N"] == n_max)
            if not pts:
                continue
            Ts = [p[0] for p in pts]
            axes[i][0].plot(Ts, [p[1] or float("nan") for p in pts], marker="o",
                            label=f"{name} {dt}")
            axes[i][1].plot(Ts, [p[2] if p[2] is not None else float("nan") for p in pts],
                            marker="o", label=f"{name} {dt}")
        axes[i][0].set_title(f"{mode}: speedup over the torch reference (N={n_max})")
        axes[i][1].set_title(f"{mode}: % of copy bandwidth (N={n_max})")
        Ts_all = sorted({r["T"] for r in mine})
        for ax in axes[i]:
            ax.set_xscale("log", base=2)
            ax.set_xticks(Ts_all)
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.set_xlabel("T")
            ax.grid(True, alpha=0.3)
        axes[i][0].set_yscale("log")
        axes[i][0].yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
        axes[i][0].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axes[i][0].legend(fontsize=7)
    harness.save_figure(fig, path)
    return None


# -------------------------------------------------------------------------------------- CLI
def _dtype_arg(name: str):
    if name not in DTYPES:
        raise KeyError(f"unknown dtype {name!r} (choose from {', '.join(DTYPES)})")
    return name


def parse_args(argv=None) -> argparse.Namespace:
    ap = harness.argument_parser(
        prog="lif_throughput.py",
        description="Every LIF implementation on this machine against the pure-PyTorch "
                    "reference:\ntime (median, p20-p80), speedup, effective bandwidth and its "
                    "share of the copy\nbandwidth, activation memory. Each provider is checked "
                    "against the reference\nbefore it is timed; a wrong one is reported, not "
                    "timed.",
        epilog="defaults -- CPU: T 2,4,8  N 2^18  fp32, torch.compile providers off (--compile)."
               "\n            GPU: T 1,2,4,8,16  N 2^22 and the largest power of two up to 2^26"
               " that fits,\n                 fp32,bf16,fp16, torch.compile within "
               "--compile-budget (120 s each).\n  --quick -- CPU: T 4, N 2^16; GPU: T 4,16, "
               "N 2^24, fp32,bf16; no torch.compile.\nNumbers accept 262144, 2^18, 2**18, "
               "256k, 1M. Lists are comma-separated.")
    ap.add_argument("--quick", action="store_true", help="a few small points (seconds)")
    ap.add_argument("--T", type=harness.list_arg(harness.parse_int), metavar="LIST",
                    help="time steps, e.g. 1,2,4,8,16")
    ap.add_argument("--N", type=harness.list_arg(harness.parse_int), metavar="LIST",
                    help="neurons per step, e.g. 2^20,2^24")
    ap.add_argument("--dtype", type=harness.list_arg(_dtype_arg), metavar="LIST",
                    help=f"storage dtypes: {', '.join(DTYPES)}")
    ap.add_argument("--modes", type=harness.list_arg(), default=list(MODES), metavar="LIST",
                    help="infer (forward, no grad) and/or train (forward+backward); default both")
    ap.add_argument("--providers", type=harness.list_arg(), metavar="LIST",
                    help="which providers (see --list); the reference 'torch' always runs. "
                         "Groups: tssd, sj, compile")
    ap.add_argument("--list", action="store_true",
                    help="list the providers, whether they run here and why not, then exit")
    g = ap.add_argument_group("neuron (default: the TSSD paper's)")
    g.add_argument("--neuron", choices=sorted(P.PRESETS), default="paper",
                   help="paper: soft reset, Rect(1), decay_input=False, tau=2; sj: "
                        "SpikingJelly's LIFNode defaults (hard reset 0, Sigmoid(4), "
                        "decay_input=True, tau=2), where its fused kernels take part")
    g.add_argument("--tau", type=float)
    g.add_argument("--surrogate", choices=("rect", "sigmoid", "atan"))
    g.add_argument("--alpha", type=float)
    g.add_argument("--reset", choices=("soft", "hard"))
    g.add_argument("--v-reset", type=float, dest="v_reset", help="hard-reset voltage")
    g.add_argument("--v-threshold", type=float, dest="v_threshold")
    g.add_argument("--decay-input", choices=("true", "false"), dest="decay_input")
    g.add_argument("--detach-reset", action="store_true", default=None, dest="detach_reset")
    t = harness.add_timing_args(
        ap, min_time_help="seconds of timed calls per point (CPU default 0.4, GPU 0.1, --quick "
                          "0.05)",
        min_reps_help="timed calls per point at least (CPU 5, GPU 10)",
        threads_help="torch CPU threads (default: torch's choice; 1 avoids stalls when other "
                     "processes share the cores)")
    t.add_argument("--timer", choices=("auto", "events", "do_bench"), default="auto",
                   help="GPU timer: our CUDA-event loop (auto) or triton.testing.do_bench")
    t.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="include the torch.compile providers (default: on GPU only)")
    t.add_argument("--no-compile", dest="compile", action="store_false",
                   help="leave the torch.compile providers out")
    t.add_argument("--compile-budget", type=float,
                   help="seconds of compiling per torch.compile provider, after which its "
                        "remaining points are skipped (GPU default 120; CPU: no limit)")
    harness.add_output_args(
        ap, DEFAULT_CSV, plot_help="PNG of speedup and %% of copy bandwidth vs T",
        strict_help="exit 1 when a provider is wrong or fails (default: report, exit 0)")
    args = ap.parse_args(argv)
    for m in args.modes:
        if m not in MODES:
            ap.error(f"--modes: unknown mode {m!r} (choose from {', '.join(MODES)})")
    return args


def gpu_fill_N(device, T_max: int, cap: int = 1 << 26) -> int:
    """The largest power of two N <= cap such that a T_max-step fp32 sweep point (input sets,
    the reference's training step, the guard's copies: about 64 bytes per element) fits in
    60 % of the GPU's memory."""
    total = torch.cuda.get_device_properties(device).total_memory
    n = cap
    while n > 1 << 16 and T_max * n * 64 > 0.6 * total:
        n //= 2
    return n


def resolve_sweep(args, device) -> dict:
    """T, N, dtypes, timer options and compile policy from the flags and the device."""
    cuda = device.type == "cuda"
    if cuda:
        Ts = [4, 16] if args.quick else [1, 2, 4, 8, 16]
        Ns = [1 << 24] if args.quick else sorted({1 << 22, gpu_fill_N(device, max(args.T or Ts))})
        dts = ["fp32", "bf16"] if args.quick else ["fp32", "bf16", "fp16"]
        if not torch.cuda.is_bf16_supported():
            dts = [d for d in dts if d != "bf16"]
        timer = harness.TimerOptions(min_reps=args.min_reps or (5 if args.quick else 10),
                                     max_reps=1000, warmup_reps=2, warmup_s=0.025,
                                     min_time_s=args.min_time if args.min_time is not None
                                     else (0.05 if args.quick else 0.1), timer=args.timer)
    else:
        Ts = [4] if args.quick else [2, 4, 8]
        Ns = [1 << 16] if args.quick else [1 << 18]
        dts = ["fp32"]
        timer = harness.TimerOptions(min_reps=args.min_reps or (3 if args.quick else 5),
                                     max_reps=200, warmup_reps=1,
                                     warmup_s=0.02 if args.quick else 0.05,
                                     min_time_s=args.min_time if args.min_time is not None
                                     else (0.05 if args.quick else 0.4), timer=args.timer)
    # torch.compile policy
    budget = args.compile_budget if args.compile_budget is not None else (
        120.0 if cuda else math.inf)
    if args.compile is False:
        reason = "--no-compile"
    elif args.quick and args.compile is None:
        reason = "--quick (compiling takes seconds to minutes per shape; run without --quick)"
    elif not cuda and args.compile is None:
        reason = ("off on CPU by default: Inductor compiles each (T, N, dtype, mode) for tens of "
                  "seconds on a small CPU; --compile turns it on (compile time is reported)")
    else:
        reason = None
    return {"T": args.T or Ts, "N": args.N or Ns, "dtypes": [DTYPES[d] for d in
            (args.dtype or dts)], "timer": timer, "compile_budget": budget,
            "compile_reason": reason}


def select_providers(all_p: List[P.Provider], wanted: Optional[Sequence[str]]):
    """The providers named by --providers (plus the reference), in the standard order."""
    if not wanted:
        return all_p, []
    groups = {"tssd": [p.name for p in all_p if p.kind in ("reference", "tssd")],
              "sj": [p.name for p in all_p if p.name.startswith("sj-")],
              "compile": [p.name for p in all_p if p.kind in P.COMPILE_KINDS],
              "all": [p.name for p in all_p]}
    names = harness.select_names(wanted, [p.name for p in all_p], groups, "provider")
    names.add(P.REFERENCE)
    return [p for p in all_p if p.name in names], sorted(names)


def main(argv=None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = harness.resolve_device(args.device)
    if args.timer == "do_bench" and device.type != "cuda":
        raise SystemExit("--timer do_bench needs a CUDA device (CPU timing uses perf_counter)")
    cfg = P.neuron_config(args.neuron, tau=args.tau, surrogate=args.surrogate, alpha=args.alpha,
                          reset=args.reset, v_reset=args.v_reset, v_threshold=args.v_threshold,
                          decay_input=None if args.decay_input is None
                          else args.decay_input == "true", detach_reset=args.detach_reset)
    sweep_cfg = resolve_sweep(args, device)
    providers, explicit = select_providers(P.all_providers(device), args.providers)
    built = build_providers(providers, cfg, device, sweep_cfg["compile_reason"], explicit)

    if args.list:
        print(f"providers on {device}:")
        for p in providers:
            b = built[p.name]
            state = "runs" if not isinstance(b, str) else f"skipped: {b}"
            print(f"  {p.name:<14} {p.description}\n  {'':<14} -> {state}")
        return 0

    env = harness.environment(device)
    print(f"LIF throughput -- every implementation against the pure-PyTorch reference\n"
          f"{harness.environment_header(env)}\nneuron: {cfg.describe()}", flush=True)
    copy = harness.copy_bandwidth(
        device, nbytes=max(16 << 20, 2 * harness.cache_bytes(device)) if args.quick else None,
        opts=harness.TimerOptions(min_reps=5 if args.quick else 10,
                                  min_time_s=0.05 if args.quick else 0.3))
    print(f"copy bandwidth: {copy['GBps']:.3g} GB/s (p20-p80 {copy['GBps_p20']:.3g}-"
          f"{copy['GBps_p80']:.3g}; read + write of a {harness.fmt_bytes(copy['bytes'] / 2)} "
          f"copy)\n", flush=True)

    Ts, Ns, dtypes = sweep_cfg["T"], sweep_cfg["N"], sweep_cfg["dtypes"]
    total = len(Ts) * len(Ns) * len(dtypes) * len(args.modes) * len(providers)
    progress = harness.Progress(total, enabled=not args.no_progress)
    sweep = Sweep(providers, built, cfg, device,
                  SweepOptions(sweep_cfg["timer"], sweep_cfg["compile_budget"], args.seed),
                  copy_GBps=copy["GBps"], progress=progress)
    rows = sweep.run(Ts, Ns, dtypes, args.modes)
    progress.close()
    wall = time.perf_counter() - t_start

    print(render_table(rows, built, device))
    summary = render_summary(rows)
    if summary:
        print(f"\nsummary (speedup over 'torch', the pure-PyTorch autograd loop):\n{summary}")
    skipped = [(n, b) for n, b in built.items() if isinstance(b, str)]
    if skipped:
        print("\nnot run here:")
        for n, reason in skipped:
            print(f"  {n:<14} {reason}")
    print(f"\nlegend: {_bytes.LEGEND} speedup = reference median / provider median. saved = "
          f"bytes autograd keeps for backward (unique storages, input excluded)"
          + ("; peak = extra CUDA memory at the peak of one call." if device.type == "cuda"
             else "; peak memory is reported on CUDA only.")
          + " Each provider is checked against the reference before it is timed ('wrong' = "
            "not timed). Input sets are rotated so inputs come from memory, but outputs reuse "
            "freed, cache-warm memory: %copy above 100% means part of the traffic hit cache.")
    bad = [r for r in rows if r["status"].startswith(("wrong", "error"))]
    if bad:
        print(f"\nWARNING: {len(bad)} point(s) wrong or failed: "
              + "; ".join(sorted({f"{r['provider']}: {r['status']}" for r in bad}))[:600])
    print(f"\nwall time: {wall:.1f} s", flush=True)

    neuron = cfg.describe()
    for r in rows:
        r.update({k: env[k] for k in ("timestamp", "device", "device_name", "commit", "torch",
                                       "triton", "spikingjelly", "tssd_fast", "loadavg_1min")},
                 neuron=neuron)
    if not args.no_csv and args.csv:
        path = harness.append_csv(args.csv, [{k: _sig(v) for k, v in r.items()} for r in rows],
                                  CSV_FIELDS)
        print(f"rows appended to {path}")
    harness.write_json_and_plot(args, lambda: {
        "environment": env, "neuron": {"describe": neuron, **cfg.__dict__},
        "copy_bandwidth": copy, "byte_model": _bytes.LEGEND,
        "sweep": {"T": Ts, "N": Ns, "dtypes": [DTYPE_NAMES[d] for d in dtypes],
                  "modes": args.modes, "timer": dataclasses.asdict(sweep_cfg["timer"]),
                  "compile_budget_s": None if math.isinf(sweep_cfg["compile_budget"])
                  else sweep_cfg["compile_budget"],
                  "compile_spent_s": sweep.compile_spent_s},
        "providers": {n: ("runs" if not isinstance(b, str) else f"skipped: {b}")
                      for n, b in built.items()},
        "wall_s": wall, "rows": rows},
        lambda path: write_plot(path, rows))
    return 1 if (args.strict and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
