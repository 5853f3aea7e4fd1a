"""Per-call host cost of the spike-input layers (docs/MEMORY.md) as a network calls them, on
tiny inputs where the kernels are nothing and the host path is everything: forward + backward
microseconds per call of each layer in memory='plain' (torch's own layer), in its lean mode
('default'; 'min' for the ConvBN that recomputes) through the compiled C++ formulas
(csrc/spike_ops.cpp, conv_bn_op.cpp, lean_pool_op.cpp), and in that mode through the torch
fallback (Python autograd functions and torch's elementwise ops: what runs without the compiled
extension).

    python benchmarks/layer_overhead.py                 # CPU, one thread
    python benchmarks/layer_overhead.py --device cuda   # synchronised once per batch of calls

Each variant is timed in batches of --calls calls; batches of all variants are interleaved over
--rounds rounds, and the median and the 20th / 80th percentiles per call are reported, with the
difference of the medians to plain's.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from tssd_fast.models import spike_layers  # noqa: E402
from tssd_fast.models.spike_layers import (SPIKES, ConvBN, LeanAvgPool2d, SpikeConv2d,  # noqa: E402
                                           SpikeLinear, set_memory_mode)

VARIANTS = ("plain", "lean", "lean, torch fallback")  # lean: the layer's mode below


def layers(device):
    """(name, module, input, lean mode): tiny spike inputs, as the networks feed each layer."""
    def spikes(*shape):
        return (torch.rand(*shape, device=device) > 0.5).float().requires_grad_()
    conv = SpikeConv2d(4, 4, 3, padding=1, bias=False)

    def convbn():
        return ConvBN(SpikeConv2d(4, 4, 3, padding=1, bias=False, code=SPIKES), torch.nn.BatchNorm2d(4)).to(device)
    return [("SpikeConv2d 3x3", conv.to(device), spikes(4, 4, 6, 6), "default"),
            ("ConvBN [T=2, B=2]", convbn(), spikes(2, 2, 4, 6, 6), "default"),
            ("ConvBN [T=2, B=2]", convbn(), spikes(2, 2, 4, 6, 6), "min"),
            ("LeanAvgPool2d 2", LeanAvgPool2d(2).to(device), spikes(4, 4, 6, 6), "default"),
            ("SpikeLinear", SpikeLinear(32, 10).to(device), spikes(4, 32), "default")]


def _batch(module, x, variant, calls, device, lean="default"):
    set_memory_mode(module, "plain" if variant == "plain" else lean)
    saved = spike_layers._OPS.get(device.type)
    if variant.endswith("fallback"):
        spike_layers._OPS[device.type] = False
    try:
        t0 = time.perf_counter()
        for _ in range(calls):
            module(x).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / calls * 1e6
    finally:
        spike_layers._OPS[device.type] = saved


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--calls", type=int, default=200, help="calls per timed batch")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    if not spike_layers._compiled_ops(device.type):
        print(f"note: no compiled spike ops for {device.type}: 'default' is the torch fallback too",
              file=sys.stderr)
    print(harness.environment_header(harness.environment(device)))
    print(f"fwd+bwd us per call: {a.calls} calls x {a.rounds} rounds, interleaved; "
          f"{a.threads} thread(s)")
    rows = []
    for name, module, x, lean in layers(device):
        for v in VARIANTS:  # warm up (allocator, lazy loading)
            _batch(module, x, v, 5, device, lean)
        times = {v: [] for v in VARIANTS}
        for _ in range(a.rounds):
            for v in VARIANTS:
                times[v].append(_batch(module, x, v, a.calls, device, lean))
        plain = harness.quantile(times["plain"], 0.5)
        for v in VARIANTS:
            med = harness.quantile(times[v], 0.5)
            rows.append([name, v.replace("lean", lean), f"{med:.1f}", f"{harness.quantile(times[v], 0.2):.1f}-"
                         f"{harness.quantile(times[v], 0.8):.1f}", f"{med - plain:+.1f}"])
    print(harness.format_table(["layer", "memory", "us", "p20-p80", "vs plain"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
