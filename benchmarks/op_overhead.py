"""Per-call cost of the LIF neuron as a user calls it, on a tiny input where the kernel is nothing
and the host path is everything: forward and forward+backward microseconds per call of every
provider (tssd_fast's LIFNode on each backend, the reference, SpikingJelly's LIFNode) next to
torch.sigmoid in the same run.

    python benchmarks/op_overhead.py --device cpu     # CPU, input [2, 64], one thread
    python benchmarks/op_overhead.py --device cuda    # host cost on the GPU path (synchronised
                                                      # once per batch of calls)
    python benchmarks/op_overhead.py --triton-host    # no GPU needed: the triton backend's host
                                                      # path, Triton's launch included

--triton-host (CPU only) runs Triton's real launch path against a stand-in CUDA driver whose
kernels record their arguments instead of running (benchmarks/_triton_fake_driver.py): the
triton rows then time everything a GPU call costs on the host up to Triton's C launcher (no
kernel runs; outputs are garbage), once with tssd_fast's direct launch of the cached kernel and
once with every launch through Triton's JITFunction.run (on CUDA, too, the triton row comes
with this second row).

Each provider is timed in batches of --calls calls (perf_counter around the batch; on CUDA one
synchronize at the end of the batch, so a call's host cost, not its kernel, is what is timed when
kernels are tiny); batches of all providers are interleaved in --rounds rounds, and the median
and 20th / 80th percentiles of the per-call time over rounds are reported.
"""
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from _providers import Skip, all_providers, neuron_config  # noqa: E402


def _timer(fn, device, calls: int):
    def batch() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        harness.synchronize(device)
        return (time.perf_counter() - t0) / calls * 1e6
    return batch


def _jit_launched(fn):
    """fn with every Triton launch through JITFunction.run (tssd_fast's direct launch off)."""
    from tssd_fast.ops import triton_lif
    if not hasattr(triton_lif, "_DIRECT"):  # a tssd_fast without the direct launch
        return fn

    def run():
        triton_lif._DIRECT, direct = False, triton_lif._DIRECT
        try:
            fn()
        finally:
            triton_lif._DIRECT = direct
    return run


def cases(device, shape, dtype, cfg, with_compile: bool, triton_host: bool = False):
    """name -> (forward fn, forward+backward fn) for every provider that runs here."""
    x = torch.randn(shape, device=device, dtype=dtype) * 1.5
    xg = x.clone().requires_grad_()
    out = {"torch.sigmoid": (lambda: torch.sigmoid(x),
                             lambda: torch.sigmoid(xg).sum().backward())}
    skipped = {}
    for p in all_providers(device):
        if triton_host and p.name not in ("triton", "cpp"):  # cpp: the C++ op, for scale
            continue
        if p.kind == "compile" and not with_compile:
            skipped[p.name] = "torch.compile: pass --compile"
            continue
        if dtype not in p.dtypes:
            skipped[p.name] = f"no {dtype}"
            continue
        try:
            run = p.build(cfg, device)
            run.activate()
            run(x)  # warm-up and a check that it runs
        except Skip as e:
            skipped[p.name] = str(e)
            continue
        except Exception as e:  # noqa: BLE001 - reported (exit status 1); the others are timed
            skipped[p.name] = f"error: {harness.short_error(e)}"
            continue

        def fwd(run=run):  # x needs no grad: nothing is recorded, as for torch.sigmoid(x)
            run(x)

        def fwd_bwd(run=run):
            run(xg)[0].sum().backward()

        out[p.name] = (fwd, fwd_bwd)
        if p.name == "triton" and (triton_host or torch.device(device).type == "cuda"):
            # the same calls with Triton's own launch: what the direct launch saves
            out["triton (JITFunction.run)"] = (_jit_launched(fwd), _jit_launched(fwd_bwd))
    return out, skipped


def main(argv=None):
    ap = harness.argument_parser(
        "op_overhead.py", __doc__.split("\n\n")[0],
        "Quoted in README ('Per-call cost'). Performance goals live here, never in tests.")
    ap.add_argument("--shape", default="2,64", help="input shape [T, *] (default 2,64)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16", "fp64"])
    ap.add_argument("--neuron", default="paper", choices=["paper", "sj"],
                    help="paper: soft reset, Rect; sj: SpikingJelly's defaults (Sigmoid, hard)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--calls", type=int, default=200, help="calls per timed batch")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--compile", action="store_true", help="also torch.compile of the reference")
    ap.add_argument("--triton-host", action="store_true",
                    help="CPU only: the triton backend's host path with Triton's real launch "
                         "against a stand-in CUDA driver (no kernel runs; see above)")
    args = ap.parse_args(argv)
    if args.triton_host:
        if args.device not in ("cpu", "auto") or os.environ.get("TRITON_INTERPRET") == "1":
            ap.error("--triton-host runs on CPU, without TRITON_INTERPRET=1")
        import _triton_fake_driver
        _triton_fake_driver.install()
        _triton_fake_driver.cpu_as_cuda()
        args.device = "cpu"
    device = harness.resolve_device(args.device)
    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
             "fp64": torch.float64}[args.dtype]
    shape = tuple(int(s) for s in args.shape.split(","))
    cfg = neuron_config(args.neuron)
    fns, skipped = cases(device, shape, dtype, cfg, args.compile, args.triton_host)
    env = harness.environment(device)
    print(harness.environment_header(env))
    print(f"input {list(shape)} {args.dtype}, neuron {cfg.describe()}, {args.threads} thread(s), "
          f"{args.calls} calls x {args.rounds} rounds", flush=True)
    if args.triton_host:
        print("triton rows: Triton's launch path against a stand-in CUDA driver (sm_90), no "
              "kernel run: host cost only")
    samples = {(n, m): [] for n in fns for m in (0, 1)}
    timers = {(n, m): _timer(fns[n][m], device, args.calls) for n in fns for m in (0, 1)}
    for t in timers.values():  # warm-up
        t()
    for _ in range(args.rounds):
        for key, t in timers.items():
            samples[key].append(t())
    q = harness.quantile
    base = [q(samples[("torch.sigmoid", m)], 0.5) for m in (0, 1)]
    rows = []
    for n in fns:
        cells = [n]
        for m in (0, 1):
            s = samples[(n, m)]
            cells += [f"{q(s, 0.5):.1f}", f"{q(s, 0.2):.1f}-{q(s, 0.8):.1f}",
                      f"{q(s, 0.5) / base[m]:.1f}x"]
        rows.append(cells)
    print(harness.format_table(
        ["provider", "fwd us", "p20-p80", "vs sigmoid", "fwd+bwd us", "p20-p80", "vs sigmoid"],
        rows))
    for n, why in skipped.items():
        print(f"  skipped {n}: {why}")
    failed = [n for n, why in skipped.items() if why.startswith("error: ")]
    if failed:
        print(f"WARNING: {len(failed)} provider(s) failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
