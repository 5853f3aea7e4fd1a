#!/usr/bin/env bash
# The Triton backend with the oldest Triton it accepts (tssd_fast.ops.triton_lif.MIN_TRITON),
# not only the newest one the test suite gets: GPU machines run older ones (the H200 we measure
# on has torch 2.11 and triton 3.6), and a kernel that compiles under one release can fail under
# another (a jit helper returning None broke every Triton kernel under 3.6 while 3.9 ran it).
#
# In a fresh virtual environment: torch (the README's CPU build), that Triton, and the CPU
# kernel built in a copy of the checkout. Then, without a GPU: every Triton kernel compiled for
# sm_90 by that release's compiler and its PTX read (tests/test_triton_interpret.py), and the
# direct launch checked against Triton's own launch path with a stand-in driver
# (tests/test_triton_launch.py). None of them may skip.
#
#   bash .ci/triton_compat_check.sh                        # CI: Triton 3.6.0
#   TRITON_COMPAT_VERSIONS="3.6.0 3.8.0" bash .ci/triton_compat_check.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
versions=${TRITON_COMPAT_VERSIONS:-3.6.0}
torch_version=${README_CHECK_TORCH:-2.13.0}
start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/triton_compat.XXXXXX")
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q "torch==$torch_version" numpy pytest ninja setuptools > "$work/pip.log" 2>&1 \
  || { cat "$work/pip.log"; echo "== Triton compat check: pip failed"; exit 1; }
bash "$repo/.ci/copy_checkout.sh" "$work/src"
cd "$work/src"
"$py" setup.py -q build_ext --inplace > "$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log"; echo "== Triton compat check: the CPU build failed"; exit 1; }

for v in $versions; do
  # --no-deps: triton has no runtime requirement here, and nothing may replace torch
  "$py" -m pip install -q --no-deps "triton==$v" > "$work/pip.log" 2>&1 \
    || { cat "$work/pip.log"; echo "== Triton compat check: pip install triton==$v failed"; exit 1; }
  echo "== Triton compat check: triton $("$py" -c 'import triton; print(triton.__version__)')"
  log="$work/pytest-$v.log"
  (cd "$work/src" && env -u TRITON_INTERPRET PYTHONPATH="$work/src" "$py" -m pytest -q -rs \
     -p no:cacheprovider tests/test_triton_launch.py \
     tests/test_triton_interpret.py::test_triton_kernels_compile_for_sm90_without_gpu \
     tests/test_triton_version.py) 2>&1 | tee "$log"
  if grep -q "skipped" "$log"; then
    echo "== Triton compat check: triton $v: a test skipped (see above)"; exit 1
  fi
done
echo "== Triton compat check passed: $versions ($(( $(date +%s) - start )) s)"
