#!/usr/bin/env bash
# The CUDA extension as a GPU user builds it, without a GPU: in a fresh virtual environment with
# a CUDA build of torch, `setup.py build_ext` compiles tssd_fast._C and tssd_fast._C_cuda with
# nvcc and links them against torch's CUDA libraries; then both modules must import, the op must
# have its CUDA kernels registered, and a CPU call (forward and backward) must run. CI's test
# suite only compiles the CUDA sources to objects; this also checks the link, the load and the
# compiler flags torch's build adds (torch 2.14's headers need C++20, for example).
#
# Only from wheels on this machine's disk: no multi-GB download. Skipped, with the reason, where
# there is no nvcc or no CUDA torch wheel on disk for this Python.
#
#   bash .ci/cuda_build_check.sh                 # CI calls it after the README check
#   CUDA_BUILD_CHECK_WHEELS=/path/to/wheels ...  # where the wheels are (default: the machine's)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
wheels=${CUDA_BUILD_CHECK_WHEELS:-/opt/pypi-more/files}
others=/opt/pypi/files
cuda_home=${CUDA_HOME:-/usr/local/cuda}
py=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')

skip() { echo "== CUDA build check: skipped: $*"; exit 0; }
[ -x "$cuda_home/bin/nvcc" ] || skip "no nvcc at $cuda_home/bin (set CUDA_HOME)"
torch_whl=$(ls "$wheels"/torch-*-"$py"-"$py"-*linux*x86_64.whl 2>/dev/null | sort -V | tail -1 || true)
[ -n "$torch_whl" ] || skip "no torch wheel for $py in $wheels"
python3 -c 'import sys, zipfile; sys.exit("torch/lib/libtorch_cuda.so" not in zipfile.ZipFile(sys.argv[1]).namelist())' \
  "$torch_whl" || skip "$(basename "$torch_whl") is not a CUDA build"

start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/cuda_build_check.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "== CUDA build check: $(basename "$torch_whl"), nvcc $("$cuda_home/bin/nvcc" --version | tail -2 | head -1)"
python3 -m venv "$work/venv"
links=(--find-links "$wheels")
[ -d "$others" ] && links+=(--find-links "$others")
# torch without its dependencies, then those the build and the import need, all from disk (the
# CUDA libraries torch's own libraries link against; not triton or cuda-bindings, which only
# some torch features import)
{ "$work/venv/bin/pip" install -q --no-index --no-deps "$torch_whl"
  "$work/venv/bin/pip" install -q --no-index "${links[@]}" numpy setuptools wheel ninja filelock \
  typing-extensions sympy networkx jinja2 fsspec nvidia-cuda-runtime nvidia-cublas \
  nvidia-cuda-nvrtc nvidia-cuda-cupti nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver \
  nvidia-cusparse nvidia-nvjitlink nvidia-nvtx nvidia-cudnn-cu13 nvidia-cusparselt-cu13 \
  nvidia-nccl-cu13 nvidia-nvshmem-cu13
} > "$work/pip.log" 2>&1 || { cat "$work/pip.log"; echo "== CUDA build check: pip failed"; exit 1; }

# a copy of the checkout (tracked files and untracked ones git does not ignore), so the build
# leaves the checkout as it was
bash "$repo/.ci/copy_checkout.sh" "$work/src"
cd "$work/src"
CUDA_HOME="$cuda_home" TORCH_CUDA_ARCH_LIST=9.0 "$work/venv/bin/python" setup.py -q build_ext --inplace \
  > "$work/build.log" 2>&1 || { tail -60 "$work/build.log"; echo "== CUDA build check: the build failed"; exit 1; }

"$work/venv/bin/python" - <<'EOF'
import torch
import tssd_fast
from tssd_fast import _C, _C_cuda  # noqa: F401  (an unresolved symbol fails here)

has = torch._C._dispatch_has_kernel_for_dispatch_key
for op in ("tssd_fast::lif_forward", "tssd_fast::lif_backward", "tssd_fast::pack_spikes",
           "tssd_fast::unpack_spikes"):
    for key in ("CPU", "CUDA"):
        assert has(op, key), f"{op} has no {key} kernel"
for op in ("tssd_fast::spike_conv2d", "tssd_fast::spike_linear", "tssd_fast::lean_avg_pool2d",
           "tssd_fast::conv_bn_recompute"):
    assert has(op, "Autograd"), f"{op} has no autograd formula"
node = tssd_fast.LIFNode(step_mode="m", backend="cpp")
x = torch.randn(4, 3, 5, requires_grad=True)
node(x).sum().backward()
assert x.grad is not None and torch.isfinite(x.grad).all()
print(f"   torch {torch.__version__}: _C and _C_cuda import, CPU and CUDA kernels registered, "
      f"a CPU call ran forward and backward")
EOF
echo "== CUDA build check passed in $(( $(date +%s) - start )) s"
