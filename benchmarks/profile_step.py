"""Where one TSSD training step's time goes, per memory mode: torch.profiler over a few steps of
train_step.py's step (same network, method, neuron and batch), printed per step as the number
of kernels launched (CUDA) or operators run (CPU), the step time without and with the
profiler, the device time, the calls that make the host wait for the GPU (synchronisations and
copies, CUDA), the top kernels by device time and the top operators by self CPU (host) time.

Written for the question the H200 run of 2026-11-28 left open: the spike-packing layers
(memory='default') made the eager VGG-9 step 1.5-1.7x longer than memory='plain' on the GPU
(1.06-1.11x on the CPU). Which kernels, and how many launches, is what this prints.

    python benchmarks/profile_step.py                        # CPU: small VGG-9, cpp neuron
    python benchmarks/profile_step.py --device cuda          # width 1, batch 64, cuda neuron
    python benchmarks/profile_step.py --device cuda --precision bf16 --memory plain,default
"""
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _train_step_neurons as N
    import harness
    import train_step as TS
else:
    from . import _train_step_neurons as N
    from . import harness
    from . import train_step as TS

import torch
from torch.profiler import ProfilerActivity, profile

from tssd_fast.models.spike_layers import MEMORY_MODES


def profile_mode(g: "TS.Group", provider, memory: str, device: torch.device, steps: int,
                 warmup: int, seed: int = 0) -> Dict[str, object]:
    """Profile `steps` steps of one memory mode after `warmup` steps: per-step counts and
    times, and the operators sorted by self device (or CPU) time."""
    x, y = TS.make_batch(g, device, seed)
    pt = TS.Point(g, provider, x, y, device, seed, memory=memory)
    for _ in range(warmup):
        pt.step()
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    harness.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        pt.step()
    harness.synchronize(device)
    plain_wall = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(steps):
            pt.step()
        harness.synchronize(device)
    wall = (time.perf_counter() - t0) / steps
    events = prof.key_averages()
    if cuda:
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                            "cudaLaunchKernelExC"))
        dev_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
        key = "self_device_time_total"
    else:
        launches = sum(e.count for e in events if e.key.startswith("aten::"))
        dev_us = 0.0
        key = "self_cpu_time_total"
    # on CUDA the kernels themselves (the aten ops that launched them carry the same time)
    mine = [e for e in events if not cuda or e.device_type.name == "CUDA"]
    top = sorted((e for e in mine if getattr(e, key) > 0), key=lambda e: -getattr(e, key))
    host = sorted((e for e in events if e.device_type.name == "CPU" and e.self_cpu_time_total > 0),
                  key=lambda e: -e.self_cpu_time_total)
    waits = {e.key: e.count / steps for e in events if e.key in WAITS and e.count}
    return {"memory": memory, "step_ms": plain_wall * 1e3, "wall_ms": wall * 1e3,
            "launches": launches / steps, "device_ms": dev_us / 1e3 / steps, "top": top,
            "host": host, "waits": waits, "key": key, "steps": steps}


WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
         "cudaMemcpyAsync", "cudaStreamWaitEvent")
"""Runtime calls that can make the host wait for the GPU (a copy to the host waits for the
stream): in an eager step any one of them stalls the launches behind it."""


def render(results: List[Dict[str, object]], n_top: int, cuda: bool) -> str:
    count = "kernels launched" if cuda else "aten ops run"
    rows = [[r["memory"], f"{r['step_ms']:.2f}", f"{r['wall_ms']:.2f}",
             f"{r['device_ms']:.2f}" if cuda else "-", f"{r['launches']:.0f}"]
            + ([", ".join(f"{k} {v:g}" for k, v in r["waits"].items()) or "none"] if cuda else [])
            for r in results]
    out = [harness.format_table(["memory", "ms/step", "profiled ms/step", "device ms/step",
                                 f"{count}/step"] + (["host waits/step"] if cuda else []),
                                rows), ""]
    what = "kernels by device" if cuda else "operators by self CPU"
    for r in results:
        out.append(f"memory={r['memory']}: top {n_top} {what} time, per step")
        top = r["top"][:n_top]
        out.append(harness.format_table(
            ["kernel" if cuda else "operator", "ms/step", "calls/step"],
            [[e.key[:70], f"{getattr(e, r['key']) / 1e3 / r['steps']:.3f}",
              f"{e.count / r['steps']:.1f}"] for e in top]))
        out.append("")
        if cuda:  # the host side: where the launching thread's time goes
            out.append(f"memory={r['memory']}: top {n_top} operators by self CPU (host) time, per step")
            out.append(harness.format_table(
                ["operator", "host ms/step", "calls/step"],
                [[e.key[:70], f"{e.self_cpu_time_total / 1e3 / r['steps']:.3f}",
                  f"{e.count / r['steps']:.1f}"] for e in r["host"][:n_top]]))
            out.append("")
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    ap = harness.argument_parser("profile_step.py", __doc__.split("\n\n")[0],
                                 "Diagnostics, not a benchmark: the profiler slows the host.")
    ap.add_argument("--memory", type=harness.list_arg(choices=MEMORY_MODES),
                    default=list(MEMORY_MODES), help="memory modes (default all)")
    ap.add_argument("--precision", default="fp32", choices=list(TS.PRECISIONS))
    ap.add_argument("--method", default="tssd", choices=list(TS.METHODS))
    ap.add_argument("--arch", default="vgg9", choices=list(TS.ARCHS))
    ap.add_argument("--provider", default=None,
                    help="neuron backend (default: cuda on GPU, cpp on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="default 64 on GPU, 8 on CPU")
    ap.add_argument("--width", type=float, default=None, help="default 1 on GPU, 0.25 on CPU")
    ap.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    ap.add_argument("--warmup", type=int, default=2, help="steps before profiling (default 2)")
    ap.add_argument("--top", type=int, default=15, help="operators listed per mode")
    args = ap.parse_args(argv)
    device = harness.resolve_device(args.device)
    cuda = device.type == "cuda"
    name = args.provider or ("cuda" if cuda else "cpp")
    providers = {p.name: p for p in N.tssd_providers(TS.P.neuron_config("paper"), device, [name])}
    if name not in providers:
        ap.error(f"--provider {name}: not one of {sorted(providers)}")
    provider = providers[name]
    if provider.skip:
        ap.error(f"--provider {name}: {provider.skip}")
    spec = TS.INPUTS["cifar"]
    g = TS.Group(args.arch, spec, args.precision, "nchw", args.method,
                 args.batch or (64 if cuda else 8), args.width or (1.0 if cuda else 0.25))
    print(harness.environment_header(harness.environment(device)))
    print(f"{args.arch} width {g.width}, batch {g.batch}, {spec.describe(g.batch)}, "
          f"{args.method}, {args.precision}, neuron {name}; {args.warmup} warm-up + "
          f"{args.steps} profiled steps per memory mode", flush=True)
    results = [profile_mode(g, provider, m, device, args.steps, args.warmup)
               for m in args.memory]
    print(render(results, args.top, cuda))
    return 0


if __name__ == "__main__":
    sys.exit(main())
