"""Reading the CUDA kernels' machine code (SASS) without a GPU: compile csrc/cuda's sources
with nvcc as setup.py does, dump them with cuobjdump, and find each kernel's time loop.

Used by benchmarks/sass_report.py (instructions per element and step, against the device's
issue rate) and by tests/test_cuda_compile.py (access widths, no division for a power-of-two
tau). Pure text processing apart from the two tool calls.
"""
import os
import re
import shutil
import subprocess
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"

# setup.py's nvcc flags with the C++ standard torch's build adds (C++20 since torch 2.13), and
# the define a CPU-only torch wheel needs (it lacks the generated c10/cuda/impl/cuda_cmake_macros.h).
NVCC_FLAGS = ["-O3", "-std=c++20", "--fmad=false", "-lineinfo",
              "-DTORCH_EXTENSION_NAME=_C_cuda", "-Xcompiler", "-fPIC",
              "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE"]

STORAGE = {"NS0_6bf16_tEf": "bf16", "NS0_5f16_tEf": "fp16", "ff": "fp32", "dd": "fp64"}
STORAGE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "fp64": 8}
# lif_forward_kernel<S, A, VEC, SAVE, P> and lif_backward_kernel<S, A, VEC, SURR, BITS, P> as
# mangled by nvcc, P = LIFParams<A, MASK, FLAGS>
KERNEL_RE = re.compile(r"lif_(forward|backward)_kernelI(NS0_6bf16_tEf|NS0_5f16_tEf|ff|dd)"
                       r"Li(\d)ELi(\d)E(?:Lb([01])E)?N\w*?LIFParamsI[fd]Li(\d+)ELi(\d+)E")
_INSN_RE = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", re.M)
_PRED_RE = re.compile(r"^@!?U?P[T0-9]+\s+")


def find_nvcc() -> Optional[str]:
    for cand in (os.environ.get("NVCC"), shutil.which("nvcc"),
                 os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def find_cuobjdump() -> Optional[str]:
    for cand in (shutil.which("cuobjdump"),
                 os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "cuobjdump")):
        if cand and os.path.isfile(cand):
            return cand
    try:  # triton's wheel ships one
        import triton
        cand = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        return str(cand) if cand.is_file() else None
    except ImportError:
        return None


def compile_object(cu: Path, out: Path, arch: str = "sm_90", nvcc: Optional[str] = None,
                   timeout: int = 900) -> subprocess.CompletedProcess:
    """nvcc -c cu -o out with setup.py's flags against torch's headers."""
    from torch.utils.cpp_extension import include_paths
    incs = include_paths() + [sysconfig.get_paths()["include"], str(CSRC)]
    cmd = [nvcc or find_nvcc(), f"-arch={arch}", "-c", str(cu), "-o", str(out), *NVCC_FLAGS]
    cmd += [f"-I{p}" for p in incs]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def cuda_sources() -> List[Path]:
    """setup.py's sources of tssd_fast._C_cuda: the kernels, one translation unit per storage
    type (lif_cuda_<dtype>.cu), and the host code that dispatches and registers them (.cpp)."""
    return sorted((CSRC / "cuda").glob("*.cu")) + sorted((CSRC / "cuda").glob("*.cpp"))


def compile_objects(out_dir: Path, sources: Optional[List[Path]] = None, arch: str = "sm_90",
                    nvcc: Optional[str] = None, jobs: Optional[int] = None
                    ) -> Dict[Path, subprocess.CompletedProcess]:
    """compile_object for each source (default: cuda_sources()) into out_dir/<stem>.o, `jobs`
    at a time (default: one per core), as a parallel build would."""
    from concurrent.futures import ThreadPoolExecutor
    sources = cuda_sources() if sources is None else sources
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        procs = pool.map(lambda src: compile_object(src, out_dir / f"{src.stem}.o", arch, nvcc),
                         sources)
        return dict(zip(sources, procs))


def _paths(objs) -> List[str]:
    return [str(objs)] if isinstance(objs, (str, Path)) else [str(o) for o in objs]


def dump_sass(objs, cuobjdump: Optional[str] = None) -> str:
    """The SASS of one object file or of several (concatenated)."""
    return "".join(subprocess.run([cuobjdump or find_cuobjdump(), "-sass", path],
                                  capture_output=True, text=True, timeout=300, check=True).stdout
                   for path in _paths(objs) if _has_device_code(path, cuobjdump))


def _has_device_code(path: str, cuobjdump: Optional[str] = None) -> bool:
    """cuobjdump fails on an object without device code (the host-only .cpp)."""
    return subprocess.run([cuobjdump or find_cuobjdump(), "-lelf", path],
                          capture_output=True, text=True, timeout=60).returncode == 0


def resources(objs, cuobjdump: Optional[str] = None) -> Dict[str, Dict[str, int]]:
    """Every function's resources (mangled name -> {'REG': registers per thread, 'STACK': stack
    bytes per thread (spills), ...}) from cuobjdump -res-usage, over one object or several."""
    out: Dict[str, Dict[str, int]] = {}
    for path in _paths(objs):
        if not _has_device_code(path, cuobjdump):
            continue
        text = subprocess.run([cuobjdump or find_cuobjdump(), "-res-usage", path],
                              capture_output=True, text=True, timeout=300, check=True).stdout
        for m in re.finditer(r"Function (\S+?):\s*\n([^\n]*)", text):
            out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", m.group(2))}
    return out


def registers(objs, cuobjdump: Optional[str] = None) -> Dict[str, int]:
    """Registers per thread of every function (mangled name -> REG), from cuobjdump -res-usage,
    over one object file or several."""
    return {name: r["REG"] for name, r in resources(objs, cuobjdump).items() if "REG" in r}


def resident_threads(regs: int, block: int = 256, regs_per_sm: int = 65536,
                     max_threads: int = 2048) -> int:
    """Threads an SM keeps resident for a kernel of `regs` registers per thread (sm_80/sm_90:
    64K registers, allocated per warp in units of 256, i.e. 8 per thread; 2048 threads)."""
    per_thread = -(-max(regs, 1) // 8) * 8
    blocks = regs_per_sm // (per_thread * block)
    return min(max_threads, blocks * block)


@dataclass
class Kernel:
    """One LIF kernel of the SASS: its template arguments and its instructions."""

    name: str            # the matched part of the mangled name
    direction: str       # 'forward' | 'backward'
    storage: str         # 'fp32' | 'bf16' | 'fp16' | 'fp64'
    vec: int
    save_or_surr: int    # forward: SAVE (0 none, 1 H, 2 bits); backward: surrogate id
    bits: bool           # backward reads the window bits
    static_mask: int     # LIFParams flags fixed at compile time
    static_flags: int
    body: str            # the SASS text of the function
    insns: List[Tuple[int, str]] = field(default_factory=list)  # (address, instruction)
    mangled: str = ""    # the whole mangled name (key of registers())

    @property
    def vec16(self) -> bool:
        """Instantiated for 16 bytes of storage per thread and row."""
        return self.vec * STORAGE_BYTES[self.storage] == 16

    @property
    def saves_bits(self) -> bool:
        return self.bits if self.direction == "backward" else self.save_or_surr == 2

    def flag(self, bit: int) -> Optional[bool]:
        """A LIFParams flag when it is static, else None."""
        return bool(self.static_flags & bit) if self.static_mask & bit else None


def kernels(sass: str) -> List[Kernel]:
    out = []
    for body in re.split(r"\n\s*Function : ", sass)[1:]:
        m = KERNEL_RE.search(body.split("\n", 1)[0])
        if m is None:
            continue
        k = Kernel(m.group(0), m.group(1), STORAGE[m.group(2)], int(m.group(3)),
                   int(m.group(4)), m.group(5) == "1", int(m.group(6)), int(m.group(7)), body,
                   mangled=body.split("\n", 1)[0].strip())
        k.insns = [(int(a, 16), t) for a, t in _INSN_RE.findall(body)]
        out.append(k)
    return out


# The CuPy/NVRTC entry points of lif_kernels.cuh (extern "C": lif_fwd_v{VEC}_s{SAVE},
# lif_bwd_v{VEC}_b{BITS}); their module's dtype, flags and surrogate are not in the name.
ENTRY_RE = re.compile(r"lif_(fwd|bwd)_v(\d+)_(?:s|b)(\d)\b")


def entry_kernels(sass: str, storage: str, math_flags: int, surrogate: int) -> List[Kernel]:
    """The Kernels of a module of NVRTC entry points (every flag static) for `storage`
    ('fp32', 'bf16', ...), LIF_MATH_FLAGS `math_flags` and LIF_SURROGATE `surrogate`."""
    out = []
    for body in re.split(r"\n\s*Function : ", sass)[1:]:
        head = body.split("\n", 1)[0].strip()
        m = ENTRY_RE.fullmatch(head)
        if m is None:
            continue
        fwd, third = m.group(1) == "fwd", int(m.group(3))
        bits = not fwd and bool(third)
        k = Kernel(head, "forward" if fwd else "backward", storage, int(m.group(2)),
                   third if fwd else (0 if bits else surrogate), bits, 15, math_flags, body,
                   mangled=head)
        k.insns = [(int(a, 16), t) for a, t in _INSN_RE.findall(body)]
        out.append(k)
    return out


def is_wide_store(op: str) -> bool:
    """A 128-bit global store, with any cache modifier: STG.E.128, STG.E.EF.128, ..."""
    return op.startswith("STG.") and op.endswith(".128")


def opcode(insn: str) -> str:
    """The opcode with its modifiers, without a predicate guard: 'LDG.E.128.CONSTANT'."""
    return _PRED_RE.sub("", insn).split()[0]


def loops(k: Kernel) -> List[Tuple[int, int]]:
    """(head, back-edge address) of every loop: a branch to a lower address."""
    out = []
    for addr, text in k.insns:
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) <= addr:
            out.append((int(m.group(1), 16), addr))
    return out


def innermost_loops(k: Kernel) -> List[Tuple[int, int]]:
    ls = loops(k)
    return [a for a in ls if not any(b != a and a[0] <= b[0] and b[1] <= a[1] for b in ls)]


def path_lengths(k: Kernel, head: int, end: int) -> Tuple[int, int]:
    """(shortest, longest) number of instructions on a path through one iteration of the loop
    [head, end]: from its head to its back edge, over the forward branches inside it. The
    shortest path skips what a plain call skips (a division's slow path, the V[t] / grad_v_seq
    blocks when they sit behind a branch); both are equal when the loop has no inner branch."""
    body = [(a, t) for a, t in k.insns if head <= a <= end and not t.startswith("NOP")]
    index = {a: i for i, (a, _) in enumerate(body)}
    inf = float("inf")
    shortest, longest = [inf] * (len(body) + 1), [-inf] * (len(body) + 1)
    for i in range(len(body) - 1, -1, -1):
        addr, text = body[i]
        op = opcode(text)
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        succ = []
        if i == len(body) - 1 or (m and int(m.group(1), 16) == head):
            if _PRED_RE.match(text) and i + 1 < len(body):
                succ.append(i + 1)  # a conditional back edge can also fall through
            else:
                shortest[i] = longest[i] = 1
                continue
        elif m:
            target = index.get(int(m.group(1), 16))
            if target is not None and target > i:
                succ.append(target)
            if _PRED_RE.match(text):
                succ.append(i + 1)
        elif op != "EXIT" or _PRED_RE.match(text):
            succ.append(i + 1)
        if succ:
            shortest[i] = 1 + min(shortest[j] for j in succ)
            longest[i] = 1 + max(longest[j] for j in succ)
    return int(shortest[0]), int(longest[0])


@dataclass
class LoopCount:
    instructions: int        # on the shortest path through one iteration, back edge included
    longest: int             # on the longest path (equal when the loop has no inner branch)
    steps: float             # time steps per iteration (the compiler may unroll)
    mix: Dict[str, int]      # opcode -> count over the whole loop body

    def per_step(self) -> float:
        return self.instructions / self.steps


def hot_loop(k: Kernel, nested: bool = False) -> Optional[LoopCount]:
    """The time loop a plain training call runs: the innermost loop with the fewest global
    memory instructions (no V[t] stores, no grad_v_seq loads), then the fewest instructions;
    nested=True prefers loops inside another loop, then the most steps per iteration
    (Triton's steps of a group of 8, not its loop over the T % 8 last steps). Steps per
    iteration from the 16-byte row stores: forward writes spikes (+ H: 4 bytes per neuron)
    per step, backward grad_x."""
    best = None
    candidates = innermost_loops(k)
    if nested:  # (a group loop the compiler unrolled whole is itself innermost: keep all then)
        outer = loops(k)
        candidates = [(a, b) for a, b in candidates
                      if any(h < a and b < e for h, e in outer)] or candidates
    for head, end in candidates:
        ops = [opcode(t) for a, t in k.insns if head <= a <= end and not t.startswith("NOP")]
        mem = sum(o.startswith(("LDG", "STG")) for o in ops)
        wide_stores = sum(is_wide_store(o) for o in ops)
        if wide_stores == 0:
            continue
        key = (mem, len(ops))
        if nested:  # the most steps per iteration: a group unrolled whole beats the tail loop
            key = (-wide_stores,) + key
        if best is None or key < best[0]:
            best = (key, ops, wide_stores, head, end)
    if best is None:
        return None
    _, ops, wide_stores, head, end = best
    per_step = max(1, k.vec * STORAGE_BYTES[k.storage] // 16)  # spikes / grad_x, 16 B each
    if k.direction == "forward" and k.save_or_surr == 1:  # + H in the compute type
        per_step += max(1, k.vec * (8 if k.storage == "fp64" else 4) // 16)
    short, long_ = path_lengths(k, head, end)
    return LoopCount(short, long_, wide_stores / per_step, dict(Counter(ops)))


def loaded_bytes_per_element_step(k: Kernel) -> float:
    """What a thread has in flight per neuron while it computes a step (the next step's row):
    forward x; backward grad_s + H (the window bits, one byte per 8 steps, are left out)."""
    io = STORAGE_BYTES[k.storage]
    if k.direction == "forward" or k.bits:
        return io
    return io + (8 if k.storage == "fp64" else 4)


def bytes_per_element_step(k: Kernel) -> float:
    """The op's minimum traffic per neuron and step (benchmarks/_bytes.py's model): forward
    reads x and writes spikes (+ H or 1/8 byte of bits), backward reads grad_s (+ H or bits)
    and writes grad_x."""
    io = 2 * STORAGE_BYTES[k.storage]
    state = 8 if k.storage == "fp64" else 4
    if k.saves_bits:
        return io + 1 / 8
    if k.direction == "forward":
        return io + (state if k.save_or_surr == 1 else 0)
    return io + state
