// The definitions behind lif_launch.h: the __global__ kernel templates around
// lif_kernels.cuh's bodies and the typed launchers that pick one for a call. Included only by
// lif_cuda_<dtype>.cu, each of which instantiates the launchers of one storage type (the kernels
// of a dtype are compiled once, in that file).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

#include <type_traits>

#include "lif_kernels.cuh"
#include "lif_launch.h"

namespace tssd_fast {
namespace cuda {

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

template <typename T>
T* opt_ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
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

template <typename scalar_t>
void launch_forward_typed(const ForwardArgs& a, cudaStream_t stream) {
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
  const LaunchShape shape = launch_shape(a.N, vec, kThreads, a.x);
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
}

template <typename scalar_t>
void launch_backward_typed(const BackwardArgs& a, cudaStream_t stream) {
  const int surrogate = flag_surrogate(a.flags);
  using A = at::opmath_type<scalar_t>;
  using S = typename KernelStorage<scalar_t>::type;
  const auto params = params_from<A>(a.tau, a.v_threshold, a.v_reset, a.alpha, a.flags);
  const S* gsp = reinterpret_cast<const S*>(a.grad_s.data_ptr<scalar_t>());
  S* gxp = reinterpret_cast<S*>(a.grad_x.data_ptr<scalar_t>());
  const A* gvs = opt_ptr<A>(a.grad_v_seq);
  const A* gvl = opt_ptr<A>(a.grad_v_last);
  const A* hs = opt_ptr<A>(a.h);
  const lif_u8* bs = opt_ptr<uint8_t>(a.bits);
  A* gv0 = opt_ptr<A>(a.grad_v0);
  const int64_t es = sizeof(S), ea = sizeof(A);
  const int vec = pick_vec(a.N, static_cast<int>(16 / es),
                           {{gsp, es}, {gxp, es}, {gvs, ea}, {gvl, ea}, {hs, ea}, {bs, 1},
                            {gv0, ea}});
  const LaunchShape shape = launch_shape(a.N, vec, kThreads, a.grad_s);
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
}

}  // namespace cuda
}  // namespace tssd_fast
