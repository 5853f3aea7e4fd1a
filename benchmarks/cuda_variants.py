"""Variants of the CUDA kernels side by side: which compile-time choice brings the LIF op's
training kernels closest to copy bandwidth (issue #11). Without a GPU, what each variant costs
to issue and how many threads it keeps resident; with one, how fast each runs.

Every variant is csrc/cuda/lif_kernels.cuh's NVRTC module (the CuPy backend's source) with some
tuning switches defined (see VARIANTS and the switches at the top of lif_kernels.cuh), compiled
with nvcc for the device (sm_90 without one): the 16-byte entry points only
(LIF_NVRTC_WIDE_ONLY). 'base' has every switch off: the CuPy backend's kernels. Their math is
the build's (tssd_fast._C_cuda: the same bodies, every flag static), their address arithmetic
differs by a few instructions per step (the scalars come as arguments, not as one struct), so
the GPU run also times the build's op ('op' row).

    python benchmarks/cuda_variants.py --static   # no GPU: compile (~1 s a module), then per
                                                  # variant and dtype: registers, stack (spills),
                                                  # resident threads, instructions per neuron-step
    python benchmarks/cuda_variants.py            # GPU + CuPy: that, then time forward + backward
                                                  # of every variant, N = 2^24, T = 2, 4, 8, 16

On the GPU each (dtype, T) point first runs every variant once on the same input and compares
its outputs (spikes, v_last, the saved bits / H, grad_x; no grad_v0, as for a call from the
default state) bit for bit with base's, and
base's with the op of the build (torch.ops.tssd_fast, when tssd_fast._C_cuda is loaded): a
variant that differs is reported, not timed. Then the variants are timed in interleaved rounds
(benchmarks/harness.py: CUDA events, L2 flushed before each call), and % copy is the op's
minimum bytes (benchmarks/_bytes.py) over the median time against the copy bandwidth measured
in the same run. The 'op' row is the build's op as it runs in a training step (outputs
allocated per call).
"""
import argparse
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bytes  # noqa: E402
import _sass  # noqa: E402
import harness  # noqa: E402
from _providers import neuron_config  # noqa: E402

from tssd_fast.ops import cupy_lif  # noqa: E402
from tssd_fast.ops.config import FLAG_SAVE, SAVE_BITS, SAVE_H, memory_order, window_rows  # noqa: E402,E501

# name -> (switches #defined before the source, what it tries)
VARIANTS: Dict[str, Tuple[Dict[str, int], str]] = {
    "base": ({}, "every switch off: 256 threads, one row in flight, plain loads and stores"),
    "pf1": ({"LIF_L2_PREFETCH": 1}, "+ L2 prefetch of the row 1 step beyond the next"),
    "pf2": ({"LIF_L2_PREFETCH": 2}, "+ L2 prefetch 2 steps beyond the next"),
    "pf4": ({"LIF_L2_PREFETCH": 4}, "+ L2 prefetch 4 steps beyond the next"),
    "cs": ({"LIF_STREAMING": 1}, "evict-first loads and stores (ld/st.global.cs)"),
    "pf2-cs": ({"LIF_L2_PREFETCH": 2, "LIF_STREAMING": 1}, "pf2 and cs"),
    "mb6": ({"LIF_MIN_BLOCKS": 6}, "at least 6 blocks of 256 per SM (<= 40 registers)"),
    "t128": ({"LIF_THREADS": 128}, "128 threads per block"),
    "t512": ({"LIF_THREADS": 512}, "512 threads per block"),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def threads(variant: str) -> int:
    return VARIANTS[variant][0].get("LIF_THREADS", cupy_lif.THREADS)


def vec16(dtype: torch.dtype) -> int:
    """Elements per 16-byte access: the entry points a variant module has."""
    return 16 // torch.empty((), dtype=dtype).element_size()


def variant_source(variant: str, dtype: torch.dtype, neuron: str = "paper") -> str:
    """The CUDA source of `variant`'s module for `dtype` and the benchmarks' neuron preset."""
    defines = {"LIF_NVRTC_WIDE_ONLY": 1, **VARIANTS[variant][0]}
    key = cupy_lif.config_key(neuron_config(neuron).lif(), dtype)
    head = "".join(f"#define {k} {int(v)}\n" for k, v in defines.items())
    return f"// benchmarks/cuda_variants.py: variant {variant}\n{head}" + cupy_lif.kernel_source(key)


def build(variants: List[str], dtypes: List[str], neuron: str, out_dir: Path, arch: str,
          jobs: Optional[int] = None, nvcc: Optional[str] = None) -> Dict[Tuple[str, str], Path]:
    """nvcc -cubin of every (variant, dtype) module into out_dir, `jobs` at a time; raises
    with nvcc's message on the first failure."""
    import subprocess
    nvcc = nvcc or _sass.find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found (set NVCC or CUDA_HOME)")
    out_dir.mkdir(parents=True, exist_ok=True)

    def one(vd):
        v, d = vd
        src = out_dir / f"{neuron}_{v}_{d}.cu"
        src.write_text(variant_source(v, DTYPES[d], neuron))
        cubin = src.with_suffix(".cubin")
        r = subprocess.run([nvcc, "-cubin", f"-arch={arch}", *cupy_lif.nvcc_options(), "-o",
                            str(cubin), str(src)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"nvcc failed on variant {v} {d}:\n{r.stderr[-3000:]}")
        return vd, cubin

    pairs = [(v, d) for v in variants for d in dtypes]
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        return dict(pool.map(one, pairs))


# ------------------------------------------------------------------------------ static (CPU)
def static_row(variant: str, dtype: str, neuron: str, cubin: Path) -> List[object]:
    """[variant, dtype, then per direction: registers, stack bytes, threads per SM,
    instructions per neuron-step of the plain training loop, L2 prefetches per step]."""
    lif = neuron_config(neuron).lif()
    sass = _sass.dump_sass(cubin)
    res = _sass.resources(cubin)
    flags = cupy_lif.math_flags(lif, DTYPES[dtype])
    ks = {k.name: k for k in _sass.entry_kernels(sass, dtype, flags, lif.surrogate_id)}
    vec = vec16(DTYPES[dtype])
    save = SAVE_BITS if lif.saves_window_bits else SAVE_H
    row: List[object] = [variant, dtype]
    for name in (cupy_lif.fwd_kernel_name(vec, save),
                 cupy_lif.bwd_kernel_name(vec, lif.saves_window_bits)):
        k, r = ks[name], res[name]
        loop = _sass.hot_loop(k)
        pf = loop.mix.get("CCTL.E.PF2", 0) / loop.steps if loop else float("nan")
        row += [r.get("REG"), r.get("STACK", 0),
                _sass.resident_threads(r.get("REG", 255), threads(variant)),
                round(loop.per_step() / vec, 2) if loop else "-", round(pf, 2)]
    return row


STATIC_HEADERS = ["variant", "dtype"] + [f"{d} {c}" for d in ("fwd", "bwd")
                                         for c in ("regs", "stack", "thr/SM", "insn/elem",
                                                   "pf/step")]


# -------------------------------------------------------------------------------- GPU run
class Point:
    """The tensors of one (dtype, T) point: inputs, and the outputs every variant writes."""

    def __init__(self, dtype: torch.dtype, T: int, N: int, neuron: str, device):
        g = torch.Generator(device=device).manual_seed(T)
        self.lif = neuron_config(neuron).lif()
        self.x = (torch.randn(T, N, generator=g, device=device) * 1.5).to(dtype)
        self.grad_s = torch.randn(T, N, generator=g, device=device).to(dtype)
        acc = torch.float32
        self.spikes = torch.empty_like(self.x)
        self.v_last = torch.empty(N, device=device, dtype=acc)
        bits = self.lif.saves_window_bits
        self.bits = torch.empty(window_rows(T), N, device=device, dtype=torch.uint8) \
            if bits else None
        self.h = None if bits else torch.empty(T, N, device=device, dtype=acc)
        self.grad_x = torch.empty_like(self.x)  # no grad_v0: the call starts from v_init

    def outputs(self) -> Dict[str, torch.Tensor]:
        out = dict(spikes=self.spikes, v_last=self.v_last, grad_x=self.grad_x)
        out.update({"bits": self.bits} if self.h is None else {"H": self.h})
        return out

    def poison(self) -> None:
        """NaN / 0xA5 in every output, so that an unwritten element cannot pass."""
        for t in self.outputs().values():
            if t.is_floating_point():
                t.fill_(float("nan"))
            else:
                t.fill_(0xA5)

    def snapshot(self) -> Dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.outputs().items()}


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same bits (NaN equal to the same NaN), same shape and dtype."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        a, b = a.view(ints), b.view(ints)
    return torch.equal(a, b)


def differences(got: Dict[str, torch.Tensor], want: Dict[str, torch.Tensor]) -> List[str]:
    return [k for k in want if not bitwise_equal(got[k], want[k])]


class Launcher:
    """A variant's forward and backward entry points, launched on torch's current stream."""

    def __init__(self, cupy, cubin: Path, variant: str, p: Point):
        self.cupy, self.p, self.block = cupy, p, threads(variant)
        mod = cupy.RawModule(path=str(cubin))
        fname, fvec, self.fargs = cupy_lif.forward_launch(
            p.x, None, p.spikes, p.v_last, None, p.h, p.bits, p.lif, p.lif.v_init)
        bname, bvec, self.bargs = cupy_lif.backward_launch(
            p.grad_s, None, None, p.h, p.bits, p.grad_x, None, p.lif)
        want = vec16(p.x.dtype)
        if fvec != want or bvec != want:
            raise ValueError(f"N = {p.x.shape[1]} and the pointers allow VEC {fvec}/{bvec}, the "
                             f"variant modules have only VEC {want} (16 bytes)")
        self.fwd_kernel, self.bwd_kernel = mod.get_function(fname), mod.get_function(bname)
        self.grid = ((p.x.shape[1] // want + self.block - 1) // self.block,)

    def _go(self, kernel, args):
        # (a CPU point: the tests' stand-in for CuPy, which runs the bodies on the CPU)
        stream = torch.cuda.current_stream().cuda_stream if self.p.x.is_cuda else 0
        with self.cupy.cuda.ExternalStream(stream):
            kernel(self.grid, (self.block,), args)

    def forward(self):
        self._go(self.fwd_kernel, self.fargs)

    def backward(self):
        self._go(self.bwd_kernel, self.bargs)

    def train(self):
        self.forward()
        self.backward()


def op_backend(device) -> Optional[str]:
    """The build's C++ op backend for `device` ('cuda', or 'cpp' for the tests' CPU points), or
    None when it does not run here (tssd_fast._C_cuda not built)."""
    from tssd_fast.ops import registry
    name = "cuda" if torch.device(device).type == "cuda" else "cpp"
    return name if registry.runs_on(name, device) else None


def op_train(p: Point, backend: str):
    """One forward + backward of the build's op (torch.ops.tssd_fast), outputs allocated."""
    from tssd_fast.ops.lif_op import op_overloads
    fwd, bwd, _ = op_overloads(backend)
    tau, vth, vr, alpha = p.lif.scalars()
    flags = p.lif.flags()
    order = memory_order(p.x)

    def run():
        spikes, v_last, _, saved = fwd(p.x, None, p.lif.v_init, tau, vth, vr, alpha,
                                       flags | FLAG_SAVE)
        gx, _ = bwd(p.grad_s, None, None, saved, tau, vth, vr, alpha, flags, order)
        return dict(spikes=spikes, v_last=v_last, grad_x=gx,
                    **({"bits": saved} if p.h is None else {"H": saved}))
    return run


def min_bytes(mode: str, T: int, N: int, dtype: torch.dtype, neuron: str) -> int:
    io = torch.empty((), dtype=dtype).element_size()
    return _bytes.lif_bytes({"forward": "fwd", "backward": "bwd"}.get(mode, mode), T, N, io,
                            neuron_config(neuron).saves_window_bits)


def run_points(args, cubins, device, cupy) -> List[List[object]]:
    """Check and time every variant at every (dtype, T) point; the rows of TIME_HEADERS."""
    copy = harness.copy_bandwidth(device)
    print(f"copy bandwidth {copy['GBps']:.0f} GB/s (p20-p80 {copy['GBps_p20']:.0f}-"
          f"{copy['GBps_p80']:.0f})", flush=True)
    opts = harness.TimerOptions(min_reps=args.min_reps, min_time_s=args.min_time,
                                max_time_s=2.0, warmup_reps=2)
    op = None if args.no_op else op_backend(device)
    rows = []
    for d in args.dtypes:
        for T in args.T:
            p = Point(DTYPES[d], T, args.N, args.neuron, device)
            launchers = {v: Launcher(cupy, cubins[v, d], v, p) for v in args.variants}
            p.poison()
            launchers["base"].train()
            want = p.snapshot()
            status = {"base": "ok"}
            if op:
                diff = differences(op_train(p, op)(), want)
                status["op"] = "ok" if not diff else "differs from base: " + ",".join(diff)
            for v, L in launchers.items():
                if v != "base":
                    p.poison()
                    L.train()
                    diff = differences(p.outputs(), want)
                    status[v] = "ok" if not diff else "DIFFERS: " + ",".join(diff)
            del want
            for mode in args.modes:
                first = len(rows)
                fns = {v: getattr(L, mode) for v, L in launchers.items() if status[v] == "ok"}
                if op and mode == "train" and status["op"] == "ok":
                    fns["op"] = op_train(p, op)
                times = harness.measure_interleaved(fns, device, opts)
                nbytes = min_bytes(mode, T, args.N, DTYPES[d], args.neuron)
                base_ms = getattr(times.get("base"), "median_ms", None)
                for v in list(launchers) + (["op"] if "op" in status and mode == "train" else []):
                    t = times.get(v)
                    if not isinstance(t, harness.Timing):
                        rows.append([d, T, mode, v, "-", "-", "-", "-", status.get(v, str(t))])
                        continue
                    pct = nbytes / (t.median_ms * 1e-3) / (copy["GBps"] * 1e9) * 100
                    rows.append([d, T, mode, v, round(t.median_ms, 4),
                                 f"{t.p20_ms:.4g}-{t.p80_ms:.4g}", f"{pct:.1f}%",
                                 f"{base_ms / t.median_ms:.3f}x" if base_ms else "-", status[v]])
                print(harness.format_table(TIME_HEADERS, rows[first:]), flush=True)
            del launchers, p
            harness.free_memory(device)
    return rows


TIME_HEADERS = ["dtype", "T", "mode", "variant", "median ms", "p20-p80 ms", "%copy",
                "vs base", "status"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--static", action="store_true", help="no GPU run: compile and count only")
    ap.add_argument("--variants", type=harness.list_arg(choices=tuple(VARIANTS)),
                    default=list(VARIANTS), metavar="LIST",
                    help=f"(base is always included): {', '.join(VARIANTS)}")
    ap.add_argument("--dtype", type=harness.list_arg(choices=tuple(DTYPES)), dest="dtypes",
                    default=list(DTYPES), metavar="LIST", help="fp32, bf16, fp16")
    ap.add_argument("--T", type=harness.list_arg(harness.parse_int), default=[2, 4, 8, 16],
                    metavar="LIST", help="time steps (default 2,4,8,16)")
    ap.add_argument("--N", type=harness.parse_int, default=1 << 24,
                    help="neurons, a multiple of 8 (default 2^24)")
    ap.add_argument("--neuron", default="paper", choices=("paper", "sj"))
    ap.add_argument("--modes", type=harness.list_arg(choices=("train", "forward", "backward")),
                    default=["train"], metavar="LIST", help="train, forward, backward")
    ap.add_argument("--arch", default=None, help="nvcc -arch (default: the GPU's, else sm_90)")
    ap.add_argument("--jobs", type=int, default=None, help="parallel nvcc runs (default: cores)")
    ap.add_argument("--build-dir", default=None, help="keep the sources and cubins here")
    ap.add_argument("--min-reps", type=int, default=10)
    ap.add_argument("--min-time", type=float, default=0.1, help="seconds of timed calls")
    ap.add_argument("--no-op", action="store_true", help="leave out the build's op")
    ap.add_argument("--json", default=None, help="write the tables here")
    a = ap.parse_args(argv)
    a.variants = ["base"] + [v for v in a.variants if v != "base"]
    if a.N <= 0 or a.N % 8:
        ap.error("--N must be a positive multiple of 8 (16-byte rows for every dtype)")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    gpu = not args.static and torch.cuda.is_available()
    if not args.static and not gpu:
        print("no CUDA device: --static (compile and count only)")
    arch = args.arch
    if arch is None:
        cc = torch.cuda.get_device_capability() if gpu else (9, 0)
        arch = f"sm_{cc[0]}{cc[1]}"
    tmp = None
    out_dir = Path(args.build_dir) if args.build_dir else \
        Path((tmp := tempfile.TemporaryDirectory()).name)
    env = harness.environment(torch.device("cuda" if gpu else "cpu"))
    print(harness.environment_header(env))
    print(f"neuron {neuron_config(args.neuron).describe()}; arch {arch}; variants: "
          + "; ".join(f"{v} = {VARIANTS[v][1]}" for v in args.variants), flush=True)
    cubins = build(args.variants, args.dtypes, args.neuron, out_dir, arch, args.jobs)
    static = []
    if _sass.find_cuobjdump() is None:
        print("cuobjdump not found: no static counts", flush=True)
    else:
        static = [static_row(v, d, args.neuron, cubins[v, d])
                  for d in args.dtypes for v in args.variants]
        print(harness.format_table(STATIC_HEADERS, static), flush=True)
    timed = []
    if gpu:
        import cupy
        timed = run_points(args, cubins, torch.device("cuda"), cupy)
    if timed:
        print("\n" + harness.format_table(TIME_HEADERS, timed))
    if args.json:
        harness.write_json(args.json, {"env": env, "arch": arch, "neuron": args.neuron,
                                       "variants": {v: VARIANTS[v][0] for v in args.variants},
                                       "static": [dict(zip(STATIC_HEADERS, r)) for r in static],
                                       "timed": [dict(zip(TIME_HEADERS, r)) for r in timed]})
    if tmp is not None:
        tmp.cleanup()
    return 1 if any("DIFFERS" in str(r[-1]) for r in timed) else 0


if __name__ == "__main__":
    sys.exit(main())
