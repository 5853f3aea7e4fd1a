// CUDA launcher of the fused multi-step LIF op (module tssd_fast._C_cuda, built by setup.py).
// Same Python-facing functions and signatures as the CPU kernel (csrc/cpu/lif_cpu.cpp), so
// registry._ExtLauncher drives both. Kernel bodies: csrc/cuda/lif_kernels.cuh (shared with the
// CuPy/NVRTC path); per-step math: csrc/lif_step.h. Launched on torch's current stream, under a
// device guard; outputs are allocated by the Python op (tssd_fast/ops/lif_op.py).
// Narrow headers on purpose: <torch/extension.h> would triple the nvcc time of this file.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <type_traits>
#include <utility>

#include "lif_kernels.cuh"

namespace tssd_fast {
namespace cuda {
namespace {

// torch storage type -> the kernels' raw storage type (same bits).
template <typename scalar_t>
struct KernelStorage {
  using type = scalar_t;
};
template <>
struct KernelStorage<at::Half> {
  using type = f16_t;
};
template <>
struct KernelStorage<at::BFloat16> {
  using type = bf16_t;
};

template <typename S, typename A, int VEC, int SAVE, bool STORE_V>
__global__ void __launch_bounds__(kThreads)
    lif_forward_kernel(const S* __restrict__ x, const A* __restrict__ v0, S* __restrict__ spikes,
                       A* __restrict__ v_last, A* __restrict__ v_seq, A* __restrict__ h_saved,
                       lif_u8* __restrict__ bits, lif_i64 T, lif_i64 N, const LIFParams<A> p) {
  lif_forward_body<S, A, VEC, SAVE, STORE_V>(x, v0, spikes, v_last, v_seq, h_saved, bits, T, N,
                                             p);
}

template <typename S, typename A, int VEC, int SURR, bool BITS>
__global__ void __launch_bounds__(kThreads)
    lif_backward_kernel(const S* __restrict__ grad_s, const A* __restrict__ grad_v_seq,
                        const A* __restrict__ grad_v_last, const A* __restrict__ h_saved,
                        const lif_u8* __restrict__ bits, S* __restrict__ grad_x,
                        A* __restrict__ grad_v0, lif_i64 T, lif_i64 N, const LIFParams<A> p) {
  lif_backward_body<S, A, VEC, SURR, BITS>(grad_s, grad_v_seq, grad_v_last, h_saved, bits,
                                           grad_x, grad_v0, T, N, p);
}

// The widest VEC in {4, 2, 1} with N % VEC == 0 and every (pointer, element size) aligned to
// VEC elements. Null pointers do not constrain. Same rule as cupy_lif.pick_vec.
int pick_vec(int64_t N, std::initializer_list<std::pair<const void*, int64_t>> ptrs) {
  for (int vec : {4, 2}) {
    if (N % vec != 0) continue;
    bool ok = true;
    for (const auto& pe : ptrs) {
      const auto addr = reinterpret_cast<std::uintptr_t>(pe.first);
      if (pe.first != nullptr && addr % static_cast<std::uintptr_t>(vec * pe.second) != 0) {
        ok = false;
      }
    }
    if (ok) return vec;
  }
  return 1;
}

template <typename T>
T* opt_ptr(const std::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined() && t->numel() > 0) ? t->data_ptr<T>() : nullptr;
}

void check_cuda(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.is_cuda(), "tssd_fast cuda backend: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.device() == like.device(), "tssd_fast cuda backend: ", name, " is on ",
              t.device(), " but x is on ", like.device());
  TORCH_CHECK(t.is_contiguous(), "tssd_fast cuda backend: ", name, " must be contiguous");
}

void check_opt(const std::optional<at::Tensor>& t, const at::Tensor& like, const char* name,
               at::ScalarType dtype, int64_t numel) {
  if (!(t.has_value() && t->defined() && t->numel() > 0)) return;
  check_cuda(*t, like, name);
  TORCH_CHECK(t->scalar_type() == dtype, "tssd_fast cuda backend: ", name, " must be ", dtype,
              ", got ", t->scalar_type());
  TORCH_CHECK(t->numel() == numel, "tssd_fast cuda backend: ", name, " has ", t->numel(),
              " elements, expected ", numel);
}

unsigned int num_blocks(int64_t N, int vec) {
  const int64_t threads = (N + vec - 1) / vec;
  return static_cast<unsigned int>((threads + kThreads - 1) / kThreads);
}

// Calls f(std::integral_constant<int, VEC>{}) for the run-time vector width vec (4, 2, else 1).
template <typename F>
void with_vec(int vec, F&& f) {
  if (vec == 4) {
    f(std::integral_constant<int, 4>{});
  } else if (vec == 2) {
    f(std::integral_constant<int, 2>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

// x [T, N]; v0 [N] (compute dtype); spikes [T, N] (x dtype); v_last [N]; optional v_seq and
// h_saved [T, N] (compute dtype); optional bits [ceil(T/8), N] uint8.
void lif_forward(const at::Tensor& x, const at::Tensor& v0, at::Tensor& spikes,
                 at::Tensor& v_last, const std::optional<at::Tensor>& v_seq,
                 const std::optional<at::Tensor>& h_saved, const std::optional<at::Tensor>& bits,
                 double tau, double v_threshold, double v_reset, bool hard_reset,
                 bool decay_input, double alpha, bool detach_reset) {
  TORCH_CHECK(x.dim() == 2, "tssd_fast cuda backend: x must be [T, N]");
  check_cuda(x, x, "x");
  check_cuda(v0, x, "v0");
  check_cuda(spikes, x, "spikes");
  check_cuda(v_last, x, "v_last");
  const int64_t T = x.size(0), N = x.size(1);
  const at::ScalarType cdt = at::toOpMathType(x.scalar_type());
  TORCH_CHECK(v0.scalar_type() == cdt && v_last.scalar_type() == cdt,
              "tssd_fast cuda backend: v0 and v_last must be ", cdt);
  TORCH_CHECK(spikes.scalar_type() == x.scalar_type() && spikes.numel() == x.numel(),
              "tssd_fast cuda backend: spikes must match x");
  TORCH_CHECK(v0.numel() == N && v_last.numel() == N,
              "tssd_fast cuda backend: v0 and v_last must have N elements");
  check_opt(v_seq, x, "v_seq", cdt, T * N);
  check_opt(h_saved, x, "h_saved", cdt, T * N);
  check_opt(bits, x, "bits", at::kByte, lif_window_rows(static_cast<int>(T)) * N);
  if (T == 0 || N == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const auto dtype = x.scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "lif_forward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    using S = typename KernelStorage<scalar_t>::type;
    const auto p = make_lif_params<A>(tau, v_threshold, v_reset, hard_reset, decay_input, alpha,
                                      detach_reset);
    const S* xp = reinterpret_cast<const S*>(x.data_ptr<scalar_t>());
    S* sp = reinterpret_cast<S*>(spikes.data_ptr<scalar_t>());
    A* v0p = v0.data_ptr<A>();
    A* vlp = v_last.data_ptr<A>();
    A* vs = opt_ptr<A>(v_seq);
    A* hs = opt_ptr<A>(h_saved);
    lif_u8* bs = opt_ptr<uint8_t>(bits);
    const int64_t es = sizeof(S), ea = sizeof(A);
    const int vec = pick_vec(N, {{xp, es}, {sp, es}, {v0p, ea}, {vlp, ea}, {vs, ea}, {hs, ea},
                                 {bs, 1}});
    const int save = hs ? kSaveH : (bs ? kSaveBits : kSaveNone);
    const unsigned int grid = num_blocks(N, vec);
    auto launch = [&](auto vec_c, auto save_c, auto store_c) {
      constexpr int kVec = decltype(vec_c)::value, kSave = decltype(save_c)::value;
      constexpr bool kStore = decltype(store_c)::value;
      lif_forward_kernel<S, A, kVec, kSave, kStore><<<grid, kThreads, 0, stream>>>(
          xp, v0p, sp, vlp, vs, hs, bs, T, N, p);
    };
    auto by_store = [&](auto vec_c, auto save_c) {
      if (vs) {
        launch(vec_c, save_c, std::true_type{});
      } else {
        launch(vec_c, save_c, std::false_type{});
      }
    };
    auto by_save = [&](auto vec_c) {
      if (save == kSaveH) {
        by_store(vec_c, std::integral_constant<int, kSaveH>{});
      } else if (save == kSaveBits) {
        by_store(vec_c, std::integral_constant<int, kSaveBits>{});
      } else {
        by_store(vec_c, std::integral_constant<int, kSaveNone>{});
      }
    };
    with_vec(vec, by_save);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// grad_s [T, N] (x dtype); optional grad_v_seq [T, N], grad_v_last [N] (compute dtype);
// exactly one of h_saved [T, N] / bits [ceil(T/8), N]; grad_x [T, N]; grad_v0 [N].
void lif_backward(const at::Tensor& grad_s, const std::optional<at::Tensor>& grad_v_seq,
                  const std::optional<at::Tensor>& grad_v_last,
                  const std::optional<at::Tensor>& h_saved,
                  const std::optional<at::Tensor>& bits, at::Tensor& grad_x,
                  at::Tensor& grad_v0, double tau, double v_threshold, double v_reset,
                  bool hard_reset, bool decay_input, int64_t surrogate, double alpha,
                  bool detach_reset) {
  TORCH_CHECK(grad_s.dim() == 2, "tssd_fast cuda backend: grad_s must be [T, N]");
  check_cuda(grad_s, grad_s, "grad_s");
  check_cuda(grad_x, grad_s, "grad_x");
  check_cuda(grad_v0, grad_s, "grad_v0");
  const int64_t T = grad_s.size(0), N = grad_s.size(1);
  const at::ScalarType cdt = at::toOpMathType(grad_s.scalar_type());
  TORCH_CHECK(grad_x.scalar_type() == grad_s.scalar_type() && grad_x.numel() == grad_s.numel(),
              "tssd_fast cuda backend: grad_x must match grad_s");
  TORCH_CHECK(grad_v0.scalar_type() == cdt && grad_v0.numel() == N,
              "tssd_fast cuda backend: grad_v0 must be ", cdt, " with N elements");
  check_opt(grad_v_seq, grad_s, "grad_v_seq", cdt, T * N);
  check_opt(grad_v_last, grad_s, "grad_v_last", cdt, N);
  check_opt(h_saved, grad_s, "h_saved", cdt, T * N);
  check_opt(bits, grad_s, "bits", at::kByte, lif_window_rows(static_cast<int>(T)) * N);
  if (T == 0 || N == 0) return;
  const bool use_bits = bits.has_value() && bits->defined() && bits->numel() > 0;
  TORCH_CHECK(use_bits || (h_saved.has_value() && h_saved->defined() && h_saved->numel() > 0),
              "tssd_fast cuda backend: backward needs the saved H or window bits");
  TORCH_CHECK(surrogate >= 0 && surrogate <= 2, "tssd_fast: unknown surrogate id ", surrogate);
  const c10::cuda::CUDAGuard guard(grad_s.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(grad_s.device().index()).stream();
  const auto dtype = grad_s.scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "lif_backward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    using S = typename KernelStorage<scalar_t>::type;
    const auto p = make_lif_params<A>(tau, v_threshold, v_reset, hard_reset, decay_input, alpha,
                                      detach_reset);
    const S* gsp = reinterpret_cast<const S*>(grad_s.data_ptr<scalar_t>());
    S* gxp = reinterpret_cast<S*>(grad_x.data_ptr<scalar_t>());
    const A* gvs = opt_ptr<A>(grad_v_seq);
    const A* gvl = opt_ptr<A>(grad_v_last);
    const A* hs = use_bits ? nullptr : opt_ptr<A>(h_saved);
    const lif_u8* bs = use_bits ? opt_ptr<uint8_t>(bits) : nullptr;
    A* gv0 = grad_v0.data_ptr<A>();
    const int64_t es = sizeof(S), ea = sizeof(A);
    const int vec = pick_vec(N, {{gsp, es}, {gxp, es}, {gvs, ea}, {gvl, ea}, {hs, ea}, {bs, 1},
                                 {gv0, ea}});
    const unsigned int grid = num_blocks(N, vec);
    auto launch = [&](auto vec_c, auto surr_c, auto bits_c) {
      constexpr int kVec = decltype(vec_c)::value, kSurr = decltype(surr_c)::value;
      constexpr bool kBits = decltype(bits_c)::value;
      lif_backward_kernel<S, A, kVec, kSurr, kBits><<<grid, kThreads, 0, stream>>>(
          gsp, gvs, gvl, hs, bs, gxp, gv0, T, N, p);
    };
    auto by_mode = [&](auto vec_c) {
      if (use_bits) {
        launch(vec_c, std::integral_constant<int, kRect>{}, std::true_type{});
      } else if (surrogate == kRect) {
        launch(vec_c, std::integral_constant<int, kRect>{}, std::false_type{});
      } else if (surrogate == kSigmoid) {
        launch(vec_c, std::integral_constant<int, kSigmoid>{}, std::false_type{});
      } else {
        launch(vec_c, std::integral_constant<int, kATan>{}, std::false_type{});
      }
    };
    with_vec(vec, by_mode);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace
}  // namespace cuda
}  // namespace tssd_fast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "tssd_fast CUDA kernels of the fused multi-step LIF op";
  m.def("lif_forward", &tssd_fast::cuda::lif_forward, "fused LIF forward over [T, N] (CUDA)");
  m.def("lif_backward", &tssd_fast::cuda::lif_backward, "fused LIF backward over [T, N] (CUDA)");
}
