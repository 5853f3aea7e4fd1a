"""What the CUDA kernels ask of the GPU, read from their machine code (no GPU needed).

Compiles csrc/cuda/*.cu for sm_90 with setup.py's flags (or reads --object), finds each
16-byte kernel's time loop in the SASS, and reports for the neurons that matter (the TSSD
paper's and SpikingJelly's default) per dtype and direction:

    insn/step      instructions of the loop per time step (one thread, VEC neurons)
    insn/elem      the same per neuron and step
    bytes/elem     the op's minimum traffic per neuron and step (benchmarks/_bytes.py's model)
    insn/byte      instructions the SMs must issue per byte that memory moves
    issue@bw       the share of the device's issue rate those instructions need when memory
                   runs at the copy bandwidth: (insn/byte) * copy_bw / issue rate. Near or
                   above ~0.5, a kernel is bound by instruction issue, not by memory.
    regs, thr/SM   registers per thread (cuobjdump -res-usage) and the threads an SM keeps
                   resident with 256-thread blocks (64K registers, at most 2048 threads)
    KB/SM          bytes of the next step's rows in flight per SM (resident threads x VEC x
                   loaded bytes per neuron): what hides memory latency (Little's law)

The device figures (SMs, clock, copy bandwidth) default to the H200 run of 2026-11-28
(benchmarks/results/gpu_2026-11-28_74c794e): 132 SMs x 4 schedulers x 1.98 GHz x 32 lanes
= 33.4 T thread-instructions/s against 4.21 TB/s, i.e. 7.9 instructions per byte at best.
This is a static count: it says what each step costs to issue, not how fast a kernel runs.

    python benchmarks/sass_report.py            # compile (about 40 s on 2 cores), print the table
    python benchmarks/sass_report.py --all      # every 16-byte kernel, not just the two neurons
    python benchmarks/sass_report.py --triton   # the Triton kernels of the two neurons instead
                                                # (compiled by Triton for sm_90, no GPU needed)

For Triton, VEC is the elements a thread holds per row (16 bytes of storage), thr/SM counts
blocks of the launcher's num_warps, and KB/SM holds AHEAD rows in flight per stream.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import _sass

NEURONS = {
    # name: (forward static flags, backward static flags, forward SAVE, backward (surr, bits))
    # paper: soft reset, decay_input False, tau 2 (a power of two), Rect -> window bits
    "paper": (8, 8, 2, (0, True)),
    # SpikingJelly's default: hard reset, decay_input True, tau 2, Sigmoid -> H saved
    "sj": (1 | 2 | 8, 1 | 8, 1, (1, False)),
}


def rows(kernels, args, regs=None):
    issue_rate = args.sms * 4 * args.clock_ghz * 1e9 * 32
    budget = issue_rate / (args.copy_tbps * 1e12)  # instructions per byte at full bandwidth
    out = []
    for k in kernels:
        if not k.vec16 or k.static_mask == 0:
            continue
        neuron = "-"
        for name, (ff, bf, save, (surr, bits)) in NEURONS.items():
            if k.direction == "forward" and k.static_flags == ff and k.save_or_surr == save:
                neuron = name
            if (k.direction == "backward" and k.static_flags == bf and k.save_or_surr == surr
                    and k.bits == bits):
                neuron = name
        if neuron == "-" and not args.all:
            continue
        loop = _sass.hot_loop(k)
        if loop is None:
            continue
        per_elem = loop.per_step() / k.vec
        bpe = _sass.bytes_per_element_step(k)
        nregs = (regs or {}).get(k.mangled)
        threads = _sass.resident_threads(nregs) if nregs else None
        in_flight = (threads * k.vec * _sass.loaded_bytes_per_element_step(k) / 1024
                     if threads else None)
        out.append(dict(neuron=neuron, direction={"forward": "fwd", "backward": "bwd"}[k.direction],
                        dtype=k.storage, vec=k.vec,
                        flags=k.static_flags, save=k.save_or_surr, bits=k.bits,
                        step=loop.per_step(), elem=per_elem, bytes=bpe, ipb=per_elem / bpe,
                        issue=per_elem / bpe / budget, regs=nregs, threads=threads,
                        in_flight=in_flight))
    return out, budget


def triton_row(kernel, used, neuron, direction, storage, budget):
    """The table row of one compiled Triton kernel (kernel, used = _triton_aot.compile_kernel)."""
    import torch
    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[storage]
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        body = _sass.dump_sass(cubin)
        nregs = max(_sass.registers(cubin).values())
    ept = used["BLOCK"] // (kernel.metadata.num_warps * 32)  # elements per thread and row
    k = _sass.Kernel(neuron, direction, dtype, ept,
                     used["SAVE"] if direction == "forward" else used["SURR"],
                     direction == "backward" and used["BITS"], 0, 0, body)
    k.insns = [(int(a, 16), t) for a, t in _sass._INSN_RE.findall(body)]
    loop = _sass.hot_loop(k, nested=True)
    if loop is None:
        return None
    threads = _sass.resident_threads(nregs, block=kernel.metadata.num_warps * 32)
    bpe = _sass.bytes_per_element_step(k)
    per_elem = loop.per_step() / ept
    flags = (1 * used["HARD"] | 2 * used["DECAY"] | 8 * used["TAU_POW2"]
             | 4 * used.get("DETACH", False))
    return dict(neuron=neuron, direction={"forward": "fwd", "backward": "bwd"}[direction],
                dtype=dtype, vec=ept, flags=flags, save=k.save_or_surr, bits=k.bits,
                step=loop.per_step(), elem=per_elem, bytes=bpe, ipb=per_elem / bpe,
                issue=per_elem / bpe / budget, regs=nregs, threads=threads,
                in_flight=(threads * ept * _sass.loaded_bytes_per_element_step(k)
                           * used.get("AHEAD", 1) / 1024))


def triton_rows(args, **compile_options):
    """The table rows of the Triton kernels of _triton_aot.NEURONS."""
    import torch

    import _triton_aot
    budget = args.sms * 4 * args.clock_ghz * 1e9 * 32 / (args.copy_tbps * 1e12)
    out = []
    for neuron, (fc, bc) in _triton_aot.NEURONS.items():
        for storage in (torch.float32, torch.bfloat16, torch.float16):
            for direction, const in (("forward", fc), ("backward", bc)):
                kernel, used = _triton_aot.compile_kernel(direction, storage, const,
                                                          **compile_options)
                row = triton_row(kernel, used, neuron, direction, storage, budget)
                if row is not None:
                    out.append(row)
    return out, budget


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--object", type=Path, nargs="+",
                    help="read these compiled objects instead of compiling")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--all", action="store_true", help="every 16-byte static-flag kernel")
    ap.add_argument("--triton", action="store_true",
                    help="the Triton kernels (tssd_fast.ops.triton_lif) instead of CUDA's")
    ap.add_argument("--sms", type=int, default=132)
    ap.add_argument("--clock-ghz", type=float, default=1.98)
    ap.add_argument("--copy-tbps", type=float, default=4.21)
    args = ap.parse_args(argv)
    if args.triton:
        if _sass.find_cuobjdump() is None:
            print("sass_report: needs cuobjdump (triton's wheel ships one)", file=sys.stderr)
            return 2
        table, budget = triton_rows(args)
        return print_table(table, budget, args, "Triton")
    if _sass.find_cuobjdump() is None or (args.object is None and _sass.find_nvcc() is None):
        print("sass_report: needs nvcc and cuobjdump (CUDA toolkit, or triton's wheel for "
              "cuobjdump)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        objs = args.object
        if not objs:
            sources = [src for src in _sass.cuda_sources() if src.suffix == ".cu"]
            print(f"compiling {', '.join(src.name for src in sources)} for {args.arch} ...",
                  file=sys.stderr)
            procs = _sass.compile_objects(Path(tmp), sources, args.arch)
            for src, proc in procs.items():
                if proc.returncode != 0:
                    print(f"{src.name}:\n{proc.stderr[-4000:]}", file=sys.stderr)
                    return 1
            objs = [Path(tmp) / f"{src.stem}.o" for src in sources]
        kernels = _sass.kernels(_sass.dump_sass(objs))
        regs = _sass.registers(objs)
    table, budget = rows(kernels, args, regs)
    return print_table(table, budget, args, "CUDA")


def print_table(table, budget, args, what: str) -> int:
    print(f"{what} kernels. Device model: {args.sms} SMs x 4 x {args.clock_ghz} GHz x 32 lanes "
          f"over {args.copy_tbps} TB/s copy bandwidth = {budget:.1f} instructions per byte at best\n")
    head = ("neuron", "dir", "dtype", "VEC", "flags", "save/surr", "insn/step", "insn/elem",
            "bytes/elem", "insn/byte", "issue@bw", "regs", "thr/SM", "KB/SM")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    order = {"paper": 0, "sj": 1, "-": 2}
    for r in sorted(table, key=lambda r: (order[r["neuron"]], r["direction"] != "fwd",
                                          r["dtype"], r["flags"], r["save"])):
        save = (("none", "H", "bits")[r["save"]] if r["direction"] == "fwd"
                else ("bits" if r["bits"] else ("rect", "sigmoid", "atan")[r["save"]]))
        print(" | ".join([r["neuron"], r["direction"], r["dtype"], str(r["vec"]),
                          str(r["flags"]), save, f"{r['step']:.0f}", f"{r['elem']:.1f}",
                          f"{r['bytes']:.3g}", f"{r['ipb']:.2f}", f"{r['issue']:.0%}",
                          str(r["regs"] or "?"), str(r["threads"] or "?"),
                          f"{r['in_flight']:.0f}" if r["in_flight"] else "?"]))
    print("\nflags: fixed at compile time (1 hard reset, 2 decay_input, "
          "4 detach_reset, 8 tau a power of two). insn/step counts the loop of a plain "
          "training call (no V[t] stores, no grad_v_seq reads), unrolled iterations divided "
          "out. A static count, not a timing.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
