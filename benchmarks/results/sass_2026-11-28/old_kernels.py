"""The old kernels' (commit 03c551e) time loops, counted like benchmarks/sass_report.py counts the
new ones, with their flags folded at compile time as the CuPy path compiled them. The CUDA build
of 03c551e read the flags at run time, so these counts are its lower bound.

    git worktree add /tmp/old 03c551e
    PYTHONPATH=. python benchmarks/results/sass_2026-11-28/old_kernels.py /tmp/old
"""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _sass  # noqa: E402

CASES = {  # name: (storage, hard, decay, detach, surrogate, extra 16-byte entry points, kernels)
    "paper fp32": ("float", 0, 0, 0, 0, "", ("lif_fwd_v4_s2_t0", "lif_bwd_v4_b1")),
    "paper bf16": ("tssd_fast::cuda::bf16_t", 0, 0, 0, 0,
                   "LIF_NVRTC_FWD(8, 2, 0)\nLIF_NVRTC_BWD(8, 1)", ("lif_fwd_v8_s2_t0", "lif_bwd_v8_b1")),
    "paper fp16": ("tssd_fast::cuda::f16_t", 0, 0, 0, 0,
                   "LIF_NVRTC_FWD(8, 2, 0)\nLIF_NVRTC_BWD(8, 1)", ("lif_fwd_v8_s2_t0", "lif_bwd_v8_b1")),
    "sj fp32": ("float", 1, 1, 0, 1, "", ("lif_fwd_v4_s1_t0", "lif_bwd_v4_b0")),
    "sj bf16": ("tssd_fast::cuda::bf16_t", 1, 1, 0, 1,
                "LIF_NVRTC_FWD(8, 1, 0)\nLIF_NVRTC_BWD(8, 0)", ("lif_fwd_v8_s1_t0", "lif_bwd_v8_b0")),
}


def main(old_root: str) -> None:
    header = Path(old_root) / "csrc" / "cuda" / "lif_kernels.cuh"
    print("case | kernel | insn/step | insn/elem | bytes/elem | insn/byte | issue@bw | divides")
    print("--- | --- | --- | --- | --- | --- | --- | ---")
    with tempfile.TemporaryDirectory() as tmp:
        for case, (storage, hard, decay, detach, surr, extra, names) in CASES.items():
            src = Path(tmp) / "old.cu"
            src.write_text("\n".join([
                f"#define LIF_STORAGE_T {storage}", "#define LIF_ACC_T float",
                f"#define LIF_HARD_RESET {hard}", f"#define LIF_DECAY_INPUT {decay}",
                f"#define LIF_DETACH_RESET {detach}", f"#define LIF_SURROGATE {surr}",
                "#define LIF_NVRTC_ENTRY_POINTS 1", f'#include "{header}"', extra, ""]))
            cubin = Path(tmp) / "old.cubin"
            subprocess.run([_sass.find_nvcc(), "-arch=sm_90", "-cubin", "-O3", "-std=c++17",
                            "--fmad=false", str(src), "-o", str(cubin)], check=True)
            for body in re.split(r"\n\s*Function : ", _sass.dump_sass(cubin))[1:]:
                fn = body.split("\n", 1)[0].strip()
                if fn not in names:
                    continue
                fwd = fn.startswith("lif_fwd")
                vec = int(re.search(r"_v(\d)", fn).group(1))
                k = _sass.Kernel(fn, "forward" if fwd else "backward", case.split()[1], vec,
                                 int(re.search(r"_s(\d)", fn).group(1)) if fwd else surr,
                                 fn.endswith("_b1"), 15, 0, body)
                k.insns = [(int(a, 16), t) for a, t in _sass._INSN_RE.findall(body)]
                loop = _sass.hot_loop(k)
                per_elem = loop.per_step() / vec
                bpe = _sass.bytes_per_element_step(k)
                print(f"{case} | {fn} | {loop.per_step():.0f} | {per_elem:.1f} | {bpe:.3g} | "
                      f"{per_elem / bpe:.2f} | {per_elem / bpe / 7.94:.0%} | "
                      f"{'MUFU.RCP' in body}")


if __name__ == "__main__":
    main(sys.argv[1])
