// CUDA kernel of the fused multi-step LIF op, registered for the CUDA dispatch key of
// tssd_fast::lif_forward / lif_backward (schema and autograd: csrc/lif_op.cpp, in tssd_fast._C;
// this file builds tssd_fast._C_cuda). Checks, memory order and output allocation:
// csrc/lif_host.h (shared with the CPU kernel); kernel bodies: csrc/cuda/lif_kernels.cuh (shared
// with the CuPy/NVRTC path); per-step math: csrc/lif_step.h. Launched on torch's current stream,
// under a device guard, one launch per direction, no fills or casts outside the kernels.
// Narrow headers on purpose: <torch/extension.h> would triple the nvcc time of this file.
#include <ATen/Dispatch.h>
#include <ATen/cuda/EmptyTensor.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <type_traits>
#include <utility>

#include "../lif_host.h"
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

template <typename S, typename A, int VEC, int SAVE, typename P>
__global__ void __launch_bounds__(kThreads)
    lif_forward_kernel(const S* __restrict__ x, const A* __restrict__ v0, A v_init,
                       S* __restrict__ spikes, A* __restrict__ v_last, A* __restrict__ v_seq,
                       A* __restrict__ h_saved, lif_u8* __restrict__ bits, lif_i64 T, lif_i64 N,
                       const P p) {
  lif_forward_body<S, A, VEC, SAVE>(x, v0, v_init, spikes, v_last, v_seq, h_saved, bits, T, N,
                                    p);
}

template <typename S, typename A, int VEC, int SURR, bool BITS, typename P>
__global__ void __launch_bounds__(kThreads)
    lif_backward_kernel(const S* __restrict__ grad_s, const A* __restrict__ grad_v_seq,
                        const A* __restrict__ grad_v_last, const A* __restrict__ h_saved,
                        const lif_u8* __restrict__ bits, S* __restrict__ grad_x,
                        A* __restrict__ grad_v0, lif_i64 T, lif_i64 N, const P p) {
  lif_backward_body<S, A, VEC, SURR, BITS>(grad_s, grad_v_seq, grad_v_last, h_saved, bits,
                                           grad_x, grad_v0, T, N, p);
}

// Which flags each 16-byte kernel fixes at compile time (a kernel per combination): forward
// never reads detach_reset; backward's decay_input only selects its result (one select).
// fp64 and the VEC=1 fallback keep every flag run-time (one kernel for all configurations).
constexpr int kForwardStaticFlags = kMathHardReset | kMathDecayInput | kMathTauPow2;
constexpr int kBackwardStaticFlags = kMathHardReset | kMathDetachReset | kMathTauPow2;

// VEC = 16 bytes of the storage type (vec16) when N % vec16 == 0 and every (pointer, element
// size) is aligned to vec16 elements, else 1. Null pointers do not constrain. Only these two
// widths are compiled: the 16-byte kernels are specialized per flag combination, and any
// misaligned or odd-sized input takes the one general VEC=1 kernel. cupy_lif.pick_vec applies
// the same alignment rule over (4, 2, 1).
int pick_vec(int64_t N, int vec16, std::initializer_list<std::pair<const void*, int64_t>> ptrs) {
  if (N % vec16 != 0) return 1;
  for (const auto& pe : ptrs) {
    const auto addr = reinterpret_cast<std::uintptr_t>(pe.first);
    if (pe.first != nullptr && addr % static_cast<std::uintptr_t>(vec16 * pe.second) != 0) {
      return 1;
    }
  }
  return vec16;
}

template <typename T>
T* opt_ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Launch shape: kThreads per block while that still gives every SM two blocks, else smaller
// blocks (down to 64 threads) so a small N still spreads over the whole device.
struct LaunchShape {
  unsigned int blocks, threads;
};
LaunchShape launch_shape(int64_t N, int vec, const at::Tensor& like) {
  const int64_t work = (N + vec - 1) / vec;
  static int sms_of[64] = {0};  // per device index: the attribute query is a driver call
  const int dev = like.device().index();
  int& sms = sms_of[dev & 63];
  if (sms == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  }
  int threads = kThreads;
  while (threads > 64 && (work + threads - 1) / threads < 2 * sms) threads /= 2;
  return {static_cast<unsigned int>((work + threads - 1) / threads),
          static_cast<unsigned int>(threads)};
}

// Calls f(integral_constant VEC, params) for the run-time vector width vec (16 bytes of S, or
// 1): the 16-byte kernels of fp32 / fp16 / bf16 get the flags in MASK fixed at compile time,
// the others run-time flags.
template <typename S, int MASK, typename A, typename F>
void with_vec_and_params(int vec, const LIFParams<A>& p, F&& f) {
  constexpr int kVec16 = static_cast<int>(16 / sizeof(S));
  if (vec == kVec16) {
    if constexpr (sizeof(S) <= 4) {
      lif_with_static_flags<MASK>(p, [&](auto q) { f(std::integral_constant<int, kVec16>{}, q); });
    } else {
      f(std::integral_constant<int, kVec16>{}, p);
    }
  } else {
    f(std::integral_constant<int, 1>{}, p);
  }
}

void launch_forward(const ForwardArgs& a) {
  const c10::cuda::CUDAGuard guard(a.x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(a.x.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "lif_forward_cuda",
                                  [&] {
    using A = at::opmath_type<scalar_t>;
    using S = typename KernelStorage<scalar_t>::type;
    const auto params = params_from<A>(a.tau, a.v_threshold, a.v_reset, a.alpha, a.flags);
    const S* xp = reinterpret_cast<const S*>(a.x.data_ptr<scalar_t>());
    S* sp = reinterpret_cast<S*>(a.spikes.data_ptr<scalar_t>());
    const A* v0p = opt_ptr<A>(a.v0);
    A* vlp = a.v_last.data_ptr<A>();
    A* vs = opt_ptr<A>(a.v_seq);
    A* hs = opt_ptr<A>(a.h);
    lif_u8* bs = opt_ptr<uint8_t>(a.bits);
    const int64_t es = sizeof(S), ea = sizeof(A);
    const int vec = pick_vec(a.N, static_cast<int>(16 / es),
                             {{xp, es}, {sp, es}, {v0p, ea}, {vlp, ea}, {vs, ea}, {hs, ea},
                              {bs, 1}});
    const int save = hs ? kSaveH : (bs ? kSaveBits : kSaveNone);
    const LaunchShape shape = launch_shape(a.N, vec, a.x);
    const A v_init = static_cast<A>(a.v_init);
    auto launch = [&](auto vec_c, auto save_c, const auto& p) {
      constexpr int kVec = decltype(vec_c)::value, kSave = decltype(save_c)::value;
      using P = std::decay_t<decltype(p)>;
      // The window bits exist for soft reset only: no kernel for bits with a static hard reset.
      if constexpr (!(kSave == kSaveBits && P::static_set(kMathHardReset))) {
        lif_forward_kernel<S, A, kVec, kSave, P><<<shape.blocks, shape.threads, 0, stream>>>(
            xp, v0p, v_init, sp, vlp, vs, hs, bs, a.T, a.N, p);
      } else {
        TORCH_CHECK(false, "tssd_fast: window bits are saved for soft reset only");
      }
    };
    with_vec_and_params<S, kForwardStaticFlags>(vec, params, [&](auto vec_c, const auto& p) {
      if (save == kSaveH) {
        launch(vec_c, std::integral_constant<int, kSaveH>{}, p);
      } else if (save == kSaveBits) {
        launch(vec_c, std::integral_constant<int, kSaveBits>{}, p);
      } else {
        launch(vec_c, std::integral_constant<int, kSaveNone>{}, p);
      }
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void launch_backward(const BackwardArgs& a) {
  const int surrogate = flag_surrogate(a.flags);
  TORCH_CHECK(surrogate <= 2, "tssd_fast: unknown surrogate id ", surrogate);
  const c10::cuda::CUDAGuard guard(a.grad_s.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(a.grad_s.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.grad_s.scalar_type(),
                                  "lif_backward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    using S = typename KernelStorage<scalar_t>::type;
    const auto params = params_from<A>(a.tau, a.v_threshold, a.v_reset, a.alpha, a.flags);
    const S* gsp = reinterpret_cast<const S*>(a.grad_s.data_ptr<scalar_t>());
    S* gxp = reinterpret_cast<S*>(a.grad_x.data_ptr<scalar_t>());
    const A* gvs = opt_ptr<A>(a.grad_v_seq);
    const A* gvl = opt_ptr<A>(a.grad_v_last);
    const A* hs = opt_ptr<A>(a.h);
    const lif_u8* bs = opt_ptr<uint8_t>(a.bits);
    A* gv0 = a.grad_v0.data_ptr<A>();
    const int64_t es = sizeof(S), ea = sizeof(A);
    const int vec = pick_vec(a.N, static_cast<int>(16 / es),
                             {{gsp, es}, {gxp, es}, {gvs, ea}, {gvl, ea}, {hs, ea}, {bs, 1},
                              {gv0, ea}});
    const LaunchShape shape = launch_shape(a.N, vec, a.grad_s);
    auto launch = [&](auto vec_c, auto surr_c, auto bits_c, const auto& p) {
      constexpr int kVec = decltype(vec_c)::value, kSurr = decltype(surr_c)::value;
      constexpr bool kBits = decltype(bits_c)::value;
      using P = std::decay_t<decltype(p)>;
      if constexpr (!(kBits && P::static_set(kMathHardReset))) {
        lif_backward_kernel<S, A, kVec, kSurr, kBits, P><<<shape.blocks, shape.threads, 0,
                                                            stream>>>(gsp, gvs, gvl, hs, bs, gxp,
                                                                      gv0, a.T, a.N, p);
      } else {
        TORCH_CHECK(false, "tssd_fast: window bits are saved for soft reset only");
      }
    };
    with_vec_and_params<S, kBackwardStaticFlags>(vec, params, [&](auto vec_c, const auto& p) {
      if (bs) {
        launch(vec_c, std::integral_constant<int, kRect>{}, std::true_type{}, p);
      } else if (surrogate == kRect) {
        launch(vec_c, std::integral_constant<int, kRect>{}, std::false_type{}, p);
      } else if (surrogate == kSigmoid) {
        launch(vec_c, std::integral_constant<int, kSigmoid>{}, std::false_type{}, p);
      } else {
        launch(vec_c, std::integral_constant<int, kATan>{}, std::false_type{}, p);
      }
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor empty_cuda(c10::IntArrayRef sizes, at::ScalarType dtype, const at::Tensor& like) {
  return at::Tensor(at::detail::empty_cuda(sizes, dtype, like.device(), std::nullopt));
}

}  // namespace
}  // namespace cuda
}  // namespace tssd_fast

TORCH_LIBRARY_IMPL(tssd_fast, CUDA, m) {
  namespace tc = tssd_fast::cuda;
  m.impl("lif_forward", &tssd_fast::lif_forward_on<c10::DeviceType::CUDA, &tc::launch_forward,
                                                   &tc::empty_cuda>);
  m.impl("lif_backward", &tssd_fast::lif_backward_on<c10::DeviceType::CUDA,
                                                     &tc::launch_backward, &tc::empty_cuda>);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "tssd_fast: the CUDA kernel of the fused LIF op (registered for the CUDA key)";
  m.def("set_poison", [](bool on) { tssd_fast::poison_flag() = on; },
        "tests: fill every fresh op output with NaN / 0xA5");
}
