"""Triton's own launch path on a machine without a GPU, for timing and testing the host side.

`install()` makes a stand-in CUDA driver active (device 0, stream 0, target sm_90) and gives
every compiled kernel a launcher that records its arguments instead of launching. Triton then
compiles tssd_fast's kernels for sm_90 exactly as on a GPU, and JITFunction.run runs all of its
own Python (binding, specialisation, cache lookup) up to the C launcher, which is all a GPU
would add. `cpu_as_cuda()` lets tssd_fast's triton backend (and its direct launches) take CPU
tensors, so LIFNode runs its whole host path on this machine.

Used by benchmarks/launch_host_cost.py and tests/test_triton_launch.py. Must not run under
TRITON_INTERPRET=1 (the kernels would be interpreted, not compiled). Triton's internals differ
between releases: written against triton 3.6-3.9 (tssd_fast.ops.triton_lif.MIN_TRITON and DIRECT_TRITON).
"""
import dataclasses

import torch

LAUNCHES = []  # the arguments of each recorded CompiledKernel.run call, while recording
_state = {"record": False}


class FakeCudaDriver:
    """What JITFunction.run and CompiledKernel ask of the active driver."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")

    def is_active(self):
        return True


def _init_handles(self):
    # The loaded module and function handle of a compiled kernel, stood in for (the handle
    # names the kernel, so a recorded launch says which kernel ran); its launcher (`run`)
    # records instead of launching.
    if self.module is not None:
        return
    self.module, self.function = 1, id(self)
    self._run = _launcher


def _launcher(*args):
    if _state["record"]:
        LAUNCHES.append(args)


def install() -> None:
    """Activate the stand-in driver and the recording launchers (for this process)."""
    import os

    import triton
    from triton.compiler import CompiledKernel
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("the fake driver needs compiled kernels: unset TRITON_INTERPRET")
    triton.runtime.driver.set_active(FakeCudaDriver())
    CompiledKernel._init_handles = _init_handles


def record(on: bool) -> None:
    """Record the launchers' arguments in LAUNCHES (on) or drop them (off, for timing)."""
    _state["record"] = bool(on)
    LAUNCHES.clear()


def cpu_as_cuda() -> None:
    """tssd_fast's triton backend takes CPU tensors and launches them as CUDA ones would be."""
    from tssd_fast.ops import registry, triton_lif
    triton_lif._DIRECT_DEVICES = ("cuda", "cpu")
    b = registry._ALL["triton"]
    registry._ALL["triton"] = dataclasses.replace(b, devices=lambda: ("cuda", "cpu"))
