"""The Triton kernels compiled ahead of time for a GPU that is not here: Triton's own LLVM and
ptxas build tssd_fast.ops.triton_lif's kernels for sm_90 from their source, as the launcher
would launch them (its block shape, AHEAD, EVEN for a full grid), and hand back PTX and cubin.

Used by benchmarks/sass_report.py --triton (instructions per element and step) and by
tests/test_triton_interpret.py (what the GPU would run). Must not run under TRITON_INTERPRET=1.
"""
from typing import Dict, Tuple

import torch

# (forward constexprs, backward constexprs) of the neurons the reports follow
NEURONS = {
    # the TSSD paper's: soft reset, decay_input False, tau 2, Rect -> window bits
    "paper": (dict(HARD=False, DECAY=False, TAU_POW2=True, SAVE=2),
              dict(HARD=False, DECAY=False, DETACH=False, TAU_POW2=True, SURR=0, BITS=True)),
    # SpikingJelly's default: hard reset, decay_input True, tau 2, Sigmoid -> H saved
    "sj": (dict(HARD=True, DECAY=True, TAU_POW2=True, SAVE=1),
           dict(HARD=True, DECAY=True, DETACH=False, TAU_POW2=True, SURR=1, BITS=False)),
}
_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
          torch.float64: "fp64"}
# pointer arguments in the storage dtype (the rest hold the compute dtype, bits_ptr bytes)
_STORAGE_PTRS = ("x_ptr", "s_ptr", "gs_ptr", "gx_ptr")


def compile_kernel(direction: str, storage: torch.dtype, constexprs: Dict, n: int = 1 << 24,
                   arch: int = 90, module=None, num_warps: int = 0, **overrides):
    """triton.compile of _lif_fwd_kernel / _lif_bwd_kernel for sm_{arch}: pointer and N
    arguments 16-byte aligned (as the launcher's specialisation sees them), BLOCK / num_warps /
    EVEN / AHEAD as the launcher picks them for N = n, plus `constexprs` (and `overrides` of
    any of them). Returns (the CompiledKernel: .asm['ptx'], .asm['cubin']; its constexprs).
    module / num_warps / BLOCK: another version of triton_lif (with its own launch shape), to
    count older kernels the same way."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tssd_fast.ops import triton_lif
    L = module or triton_lif
    fn = L._lif_fwd_kernel if direction == "forward" else L._lif_bwd_kernel
    acc = torch.float64 if storage == torch.float64 else torch.float32
    if module is None:
        block, warps = L._launch_shape(n, storage)
    else:
        block, warps = overrides["BLOCK"], num_warps
    const = dict(BLOCK=block, EVEN=n % block == 0, F64=acc == torch.float64)
    if direction == "forward":  # a fresh neuron (the state a scalar), as after reset()
        const.update(STORE_V=False, HAS_V0=False)
    else:
        const.update(HAS_GVS=False, HAS_GVL=False, HAS_GV0=False)  # no gradient for the scalar
    const.update(constexprs)
    const.update(overrides)
    if "AHEAD" not in const and module is None:  # as the launcher picks it
        const["AHEAD"] = L._ahead(direction == "forward", const.get("BITS", False),
                                  const.get("HAS_GVS", False))
    const = {k: v for k, v in const.items() if k in fn.arg_names}
    sig = {}
    for name in fn.arg_names:
        if name in const:
            sig[name] = "constexpr"
        elif name == "bits_ptr":
            sig[name] = "*u8"
        elif name.endswith("_ptr"):
            sig[name] = "*" + _TYPES[storage if name in _STORAGE_PTRS else acc]
        elif name in ("T", "N"):
            sig[name] = "i32"
        else:
            sig[name] = "fp64"
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
             if name.endswith("_ptr") or name == "N"}
    src = ASTSource(fn=fn, signature=sig, constexprs={k: v for k, v in const.items()
                                                      if sig.get(k) == "constexpr"}, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                            options=dict(num_warps=warps, enable_fp_fusion=False))
    return kernel, const


def neuron_kernels(neuron: str, storage: torch.dtype, **overrides) -> Tuple:
    """(forward, backward) CompiledKernels of NEURONS[neuron] for `storage`."""
    fwd, bwd = NEURONS[neuron]
    return (compile_kernel("forward", storage, fwd, **overrides)[0],
            compile_kernel("backward", storage, bwd, **overrides)[0])
