#!/usr/bin/env bash
# The GPU check of tssd_fast, for a lent GPU machine (see /work/.library/device/README.md):
# build, the whole test suite with every GPU backend required, compute-sanitizer memcheck of the
# CUDA kernels, and the LIF throughput benchmark. Logs land in $OUT (or /tmp/tssd_gpu_check_out).
#
#   bash benchmarks/gpu_check.sh            # build, test, memcheck, bench
#   bash benchmarks/gpu_check.sh build test # some phases, in this order
#   CAP_build=170 CAP_test=90 bash benchmarks/gpu_check.sh build test   # a time cap per phase
#
# One device call runs at most 10 minutes: if everything does not fit, run `env build test` in
# one call and `memcheck bench` in the next (test / memcheck / bench build first when the
# checkout's tssd_fast._C_cuda does not load, e.g. on a fresh machine).
#
# Phases: env build test memcheck bench overhead trainstep sass variants diag. Each one logs to
# $OUT/<phase>.log and appends a line to $OUT/summary.txt; CAP_<phase> (seconds) stops a phase
# that runs longer; the script goes on after a failing phase and exits non-zero at the end if
# any failed. Environment: PYTHON (default python3), PYTEST_WORKERS (default 8, needs
# pytest-xdist), GPU_CHECK_TESTS (test files, default tests), TORCH_CUDA_ARCH_LIST (setup.py's
# default "8.0;9.0"), GPU_CHECK_BENCH_ARGS (arguments for lif_throughput.py), GPU_CHECK_BENCH2_ARGS
# (a second lif_throughput.py run, e.g. --neuron sj, logged to bench.log too),
# GPU_CHECK_TRAIN_ARGS (arguments for train_step.py, default --quick --cuda-graphs),
# GPU_CHECK_OVERHEAD_CPU=0 (the overhead phase times the CUDA path only),
# GPU_CHECK_VARIANTS_ARGS (arguments for cuda_variants.py; it writes $OUT/variants.json),
# GPU_CHECK_PROFILE_ARGS / GPU_CHECK_MEMDIFF_ARGS (the diag phase: profile_step.py, and
# memory_diff.py, which writes $OUT/memory_diff.json; GPU_CHECK_MEMDIFF_ARGS=skip leaves it out).
# The device tool returns at most 8 files from $OUT.
set -u
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-/tmp/tssd_gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
WORK="$(mktemp -d /tmp/tssd_gpu_check.XXXXXX)"
PHASES=("$@")
[ ${#PHASES[@]} -eq 0 ] && PHASES=(env build test memcheck bench)
FAILED=0
START=$(date +%s)

note() { echo "$*" | tee -a "$OUT/summary.txt"; }

run_phase() {  # run_phase NAME FUNCTION: log to $OUT/NAME.log, one summary line
  local name="$1" fn="$2"
  local t0=$(date +%s) rc cap="CAP_$1"
  echo "=== $name: $fn (cap ${!cap:-none} s) ===" >"$OUT/$name.log"
  ( set -o pipefail; timeout -k 5 "${!cap:-100000}" bash -c "$fn" 2>&1 | tee -a "$OUT/$name.log" )
  rc=$?
  note "$(printf '%-9s rc=%-3s %4ss  (%s)' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$OUT/$name.log")"
  [ $rc -ne 0 ] && FAILED=1
  return $rc
}

phase_env() {
  nvidia-smi || true
  echo; uname -a; nproc; free -g 2>/dev/null | head -2
  command -v nvcc && nvcc --version | tail -2
  command -v compute-sanitizer || echo "compute-sanitizer not on PATH"
  "$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
for name in ("torch", "triton", "cupy", "numpy", "pytest", "xdist"):
    try:
        m = importlib.import_module(name)
        print(f"{name:8s} {getattr(m, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001
        print(f"{name:8s} missing ({type(e).__name__}: {e})")
import torch
print("cuda available:", torch.cuda.is_available(), "torch.version.cuda:", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device:", p.name, f"cc {p.major}.{p.minor}", f"{p.multi_processor_count} SMs",
          f"{p.total_memory / 2**30:.0f} GiB")
EOF
}

phase_build() {
  cd "$REPO" || return 1
  # nvcc compiles the arch list one arch at a time unless told otherwise
  export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:-} --threads=2"
  export MAX_JOBS="${MAX_JOBS:-16}"
  "$PY" -m pip install -v --no-build-isolation . || return 1
  # the same extensions in the checkout too (ninja reuses build/), so tests that import the
  # source tree or start subprocesses in it get the compiled kernels as well
  "$PY" setup.py build_ext --inplace || return 1
  # the installed package, imported from outside the checkout
  cd "$WORK" && "$PY" - <<'EOF'
import tssd_fast, torch
from tssd_fast.ops import registry, kernel_sources
print("tssd_fast from", tssd_fast.__file__)
print("csrc:", kernel_sources())
for b in ("cpp", "cuda", "triton", "cupy"):
    dev = "cpu" if b == "cpp" else "cuda"
    ok = registry.runs_on(b, dev)
    print(f"{b:7s} {'available' if ok else 'UNAVAILABLE: ' + registry.why_unavailable(b)}")
print("available on cuda:", tssd_fast.available_backends("cuda"))
assert registry.runs_on("cuda", "cuda"), "the CUDA extension was not built or not loadable"
EOF
}

phase_test() {
  cd "$REPO" || return 1
  local xdist=()
  if "$PY" -c "import xdist" 2>/dev/null && [ "${PYTEST_WORKERS:-8}" != "0" ]; then
    xdist=(-n "${PYTEST_WORKERS:-8}")
  fi
  # -v: one line per test as it ends, so a log cut by the phase's cap still names the failures
  # shellcheck disable=SC2086
  TSSD_FAST_REQUIRE_GPU_BACKENDS=cuda,triton,cupy TSSD_FAST_TRITON_LAUNCH_CHECK=1 \
    "$PY" -m pytest -p no:cacheprovider "${xdist[@]}" -rfEs --durations=15 -v --tb=line ${GPU_CHECK_TESTS:-tests}
}

phase_overhead() {  # per-call host cost through LIFNode and of the spike-input layers, CUDA
  # (and CPU unless GPU_CHECK_OVERHEAD_CPU=0)
  cd "$REPO" || return 1
  "$PY" benchmarks/op_overhead.py --device cuda || return 1
  "$PY" benchmarks/layer_overhead.py --device cuda --rounds 9 || return 1
  [ "${GPU_CHECK_OVERHEAD_CPU:-1}" = 0 ] || "$PY" benchmarks/op_overhead.py --device cpu
}

phase_trainstep() {  # whole TSSD training step per neuron, eager and CUDA-graph replay
  cd "$REPO" || return 1
  # shellcheck disable=SC2086
  "$PY" benchmarks/train_step.py --device cuda --no-csv --no-progress \
    ${GPU_CHECK_TRAIN_ARGS:---quick --cuda-graphs}
}

phase_sass() {  # what the built CUDA kernels load and store, and their instruction counts
  cd "$WORK" || return 1
  local so cuobj
  so="$("$PY" -c "import tssd_fast._C_cuda as m; print(m.__file__)")" || return 1
  cuobj="$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null)"
  [ -z "$cuobj" ] && { echo "cuobjdump not found"; return 1; }
  "$cuobj" -sass "$so" | "$PY" -c '
import collections, re, sys
text = sys.stdin.read()
for f in re.split(r"\n\s*Function : ", text)[1:]:
    name = f.split("\n", 1)[0].strip()
    acc = collections.Counter(re.findall(r"\b((?:LDG|STG)\.E[.\w]*)", f))
    print(name[:110], dict(sorted(acc.items())))'
  # instructions per neuron and step of the hot loops, against this device's issue rate
  "$PY" "$REPO/benchmarks/sass_report.py" --object "$so"
  # the same for the Triton kernels, as this machine's Triton compiles them
  "$PY" "$REPO/benchmarks/sass_report.py" --triton
}

phase_memcheck() {
  cd "$WORK" || return 1
  local cs
  cs="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null \
        || ls /opt/nvidia/nsight-compute/*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)"
  if [ -z "$cs" ]; then echo "compute-sanitizer not found"; return 1; fi
  cat >"$WORK/lif_memcheck.py" <<'EOF'
# Every CUDA kernel variant once, small: dtypes x vector widths (N % 4 == 0, == 2, odd, and a
# misaligned pointer) x save modes x store_v_seq, and every backward (bits, Rect/Sigmoid/ATan with
# H, with and without grad_v_seq / grad_v_last). Each tensor is its own cudaMalloc
# (PYTORCH_NO_CUDA_MEMORY_CACHING=1) so memcheck sees an access past any tensor's end.
import sys
import torch
import tssd_fast
from tssd_fast.ops import registry
backends = [b for b in sys.argv[1:] if registry.runs_on(b, "cuda")]
print("backends:", backends)
from tssd_fast.ops.config import LIFConfig
from tssd_fast.ops.lif_op import op_overloads
count = 0
for backend in backends:
    fwd, bwd, extra = op_overloads(backend)
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        cdt = torch.float64 if dtype == torch.float64 else torch.float32
        for N, off in ((1032, 0), (1028, 0), (1026, 0), (1027, 0), (1028, 1)):
            T = 11
            base = torch.randn(T * N + off, device="cuda").to(dtype)
            x = base[off:].view(T, N)
            v0 = torch.randn(N, device="cuda", dtype=cdt)
            for hard, surr in ((False, 0), (True, 0), (False, 1), (True, 2)):
                for store in (False, True):
                    for save in (False, True):
                        cfg = LIFConfig(2.0, 1.0, 0.0 if hard else None, True, surr,
                                        1.0 if surr == 0 else 4.0, False)
                        outs = fwd(x, v0, 0.0, *cfg.op_args(store, save), *extra)
                        outs = fwd(x, None, 0.5, *cfg.op_args(store, save), *extra)
                        count += 2
                        if not save:
                            continue
                        saved = outs[3]
                        gs = torch.randn(T, N, device="cuda").to(dtype)
                        for gvs, gvl in ((None, None), (torch.randn(T, N, device="cuda", dtype=cdt),
                                                        torch.randn(N, device="cuda", dtype=cdt))):
                            bwd(gs, gvs, gvl, saved, *cfg.op_args(), [], *extra)
                            count += 1
# the spike packing kernels (csrc/cuda/spike_pack_kernels.cu): odd sizes (a partial last byte),
# every dtype, 1, 2, 3 and 8 bit planes, a channels_last and a non-contiguous input
from tssd_fast.models import spike_layers
if spike_layers._compiled_ops("cuda"):
    ops = torch.ops.tssd_fast
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        for shape in ((1,), (7,), (8,), (1027,), (3, 5, 7, 2)):
            for bits in (1, 2, 3, 8):
                x = torch.randint(0, 2 ** bits, shape, device="cuda").to(dtype)
                for v in ((x, x.contiguous(memory_format=torch.channels_last), x.transpose(0, 2))
                          if x.dim() == 4 else (x,)):
                    packed = ops.pack_spikes(v, bits, 1)
                    ops.unpack_spikes(packed, list(v.shape), list(v.contiguous().stride()), dtype, bits, 1)
                    count += 1
torch.cuda.synchronize()
print("launch pairs run:", count)
EOF
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$cs" --tool memcheck --error-exitcode 17 \
    "$PY" "$WORK/lif_memcheck.py" cuda cupy
}

phase_bench() {
  cd "$REPO" || return 1
  if [ ! -f "$REPO/benchmarks/lif_throughput.py" ]; then
    echo "benchmarks/lif_throughput.py is missing"; return 1
  fi
  # default sweep for this device (no sweep arguments), results also as JSON
  # shellcheck disable=SC2086
  "$PY" "$REPO/benchmarks/lif_throughput.py" --json "$OUT/lif.json" --no-csv --no-progress \
    ${GPU_CHECK_BENCH_ARGS:-} || return 1
  if [ -n "${GPU_CHECK_BENCH2_ARGS:-}" ]; then
    # shellcheck disable=SC2086
    "$PY" "$REPO/benchmarks/lif_throughput.py" --no-csv --no-progress ${GPU_CHECK_BENCH2_ARGS}
  fi
}

phase_variants() {  # the kernels' tuning variants compiled with nvcc, checked and timed (CuPy)
  cd "$REPO" || return 1
  # shellcheck disable=SC2086
  "$PY" benchmarks/cuda_variants.py --json "$OUT/variants.json" ${GPU_CHECK_VARIANTS_ARGS:-}
}

phase_diag() {  # the training step's open questions: packing's kernels, memory='min' vs plain
  cd "$REPO" || return 1
  local rc=0
  # shellcheck disable=SC2086
  "$PY" benchmarks/profile_step.py --device cuda ${GPU_CHECK_PROFILE_ARGS:---precision fp32 --memory plain,default --top 12} || rc=1
  [ "${GPU_CHECK_MEMDIFF_ARGS:-}" = skip ] && return $rc
  # shellcheck disable=SC2086
  "$PY" benchmarks/memory_diff.py --device cuda --json "$OUT/memory_diff.json" \
    ${GPU_CHECK_MEMDIFF_ARGS:---precision fp32 --settings bench,no-benchmark,deterministic} || rc=1
  return $rc
}

built() {  # the checkout's CUDA extension loads (build outputs survive on a warm machine)
  (cd "$REPO" && "$PY" -c "import tssd_fast._C_cuda" 2>/dev/null)
}
ensure_built() {
  built || run_phase build phase_build
}

export REPO OUT PY WORK
export -f phase_env phase_build phase_test phase_memcheck phase_bench phase_overhead \
  phase_trainstep phase_sass phase_variants phase_diag
for p in "${PHASES[@]}"; do
  case "$p" in
    env) run_phase env phase_env ;;
    build) run_phase build phase_build ;;
    test|memcheck|bench|overhead|trainstep|sass|variants|diag) ensure_built; run_phase "$p" "phase_$p" ;;
    *) note "unknown phase $p (env build test memcheck bench overhead trainstep sass variants diag)"
       FAILED=1 ;;
  esac
done
note "total $(( $(date +%s) - START ))s; failed=$FAILED"
rm -rf "$WORK"
exit $FAILED
