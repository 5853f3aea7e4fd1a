// The per-step math of the LIF neuron: the ONE source of truth shared by the CPU kernel
// (csrc/cpu/lif_cpu.cpp), the CUDA kernels (csrc/cuda/lif_kernels.cuh) and the CuPy/NVRTC path.
// Semantics: docs/NEURON.md (SpikingJelly's LIFNode). Operation order mirrors the torch
// reference (tssd_fast/ops/reference.py) so that fp32 spikes are bitwise equal to it:
// the forward uses only +, -, / and products with an exact 0/1 spike, so FMA contraction
// cannot change a threshold comparison.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define LIF_HD __host__ __device__ __forceinline__
#else
#define LIF_HD inline
#endif

#ifndef __CUDACC_RTC__
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#endif

namespace tssd_fast {

// Surrogate ids: the same numbers as tssd_fast/surrogate.py (SURROGATE_IDS).
enum SurrogateId : int { kRect = 0, kSigmoid = 1, kATan = 2 };

// Which variant of each formula a configuration uses, as bits of LIFParams::flags.
enum LIFMathFlag : int {
  kMathHardReset = 1,
  kMathDecayInput = 2,
  kMathDetachReset = 4,
  kMathTauPow2 = 8,  // tau is a power of two: a / tau == a * inv_tau exactly (lif_div_tau)
  kMathAll = 15,
};

// Scalar parameters, converted once on the host from Python doubles to the compute type
// (the same rounding torch applies to a Python scalar in a float32 tensor op), and the flags.
// A flag in STATIC_MASK is the compile-time constant from STATIC_FLAGS; the others are read
// from `flags` at run time. A kernel compiled with every flag static has no flag branch left
// in its loop; one compiled with none serves every configuration (lif_with_static_flags,
// csrc/lif_host.h, picks the instantiation for a call).
template <typename acc_t, int STATIC_MASK = 0, int STATIC_FLAGS = 0>
struct LIFParams {
  acc_t tau;          // membrane time constant
  acc_t inv_tau;      // 1 / tau in acc_t, used only when tau is a power of two (then exact)
  acc_t v_threshold;  // firing threshold
  acc_t v_reset;      // Vr: v_reset for hard reset, 0 for soft reset
  acc_t alpha;        // surrogate sharpness
  acc_t half_width;   // Rect window half-width 0.5/alpha, computed in double on the host
  acc_t atan_scale;   // ATan: pi/2 * alpha, computed in double on the host
  int flags;          // LIFMathFlag bits

  LIF_HD constexpr bool flag(int bit) const {
    return (((STATIC_MASK & bit) ? STATIC_FLAGS : flags) & bit) != 0;
  }
  LIF_HD constexpr bool hard_reset() const { return flag(kMathHardReset); }
  LIF_HD constexpr bool decay_input() const { return flag(kMathDecayInput); }
  LIF_HD constexpr bool detach_reset() const { return flag(kMathDetachReset); }
  LIF_HD constexpr bool tau_pow2() const { return flag(kMathTauPow2); }
  // True when `bit` is fixed at compile time to set (lets a launcher skip impossible kernels).
  static constexpr bool static_set(int bit) { return (STATIC_MASK & STATIC_FLAGS & bit) != 0; }

  // The same values with the flags in MASK fixed to their current values (F == flags & MASK).
  template <int MASK, int F>
  LIF_HD LIFParams<acc_t, MASK, F> with_static() const {
    return {tau, inv_tau, v_threshold, v_reset, alpha, half_width, atan_scale, flags};
  }
};

// Window-bit layout (Rect + soft reset): bit (t % 8) of byte row t / 8 of a [ceil(T/8), N]
// uint8 tensor, so one neuron's bits for 8 steps share a byte and rows stay coalesced over N.
LIF_HD int lif_window_rows(int T) { return (T + 7) / 8; }

#ifndef __CUDACC_RTC__
// True when a / tau == a * inv_tau for every a (inv_tau = 1 / tau in acc_t): tau is a power of
// two and inv_tau a normal number, so both are the one rounding of the same real number
// (subnormal results included).
template <typename acc_t>
inline bool lif_tau_is_pow2(acc_t tau, acc_t inv_tau) {
  if (!(tau > acc_t(0)) || !std::isfinite(tau)) return false;
  int e = 0;
  return std::frexp(tau, &e) == acc_t(0.5) && std::isnormal(inv_tau);
}

// Calls fn(q) once, where q is p with the flags in MASK fixed at compile time to their values
// in p (LIFParams<acc_t, MASK, p.flags & MASK>), and returns true; false when no subset of MASK
// matched (cannot happen for valid flags). One instantiation of fn per subset of MASK: MASK
// names the flags whose per-element branch is worth a kernel each; the rest stay run-time.
// lif_host.h's lif_with_static_flags is the checked entry; tests/cuda_on_cpu.cpp calls this.
template <int MASK, typename acc_t, typename Fn, int... Fs>
bool lif_dispatch_static_flags(const LIFParams<acc_t>& p, Fn& fn,
                               std::integer_sequence<int, Fs...>) {
  static_assert((MASK & ~kMathAll) == 0, "MASK: LIFMathFlag bits only");
  const int want = p.flags & MASK;
  bool called = false;
  auto one = [&](auto f_c) {
    constexpr int F = decltype(f_c)::value;
    if constexpr ((F & ~MASK) == 0) {
      if (want == F) {
        fn(p.template with_static<MASK, F>());
        called = true;
      }
    }
  };
  (one(std::integral_constant<int, Fs>{}), ...);
  return called;
}
template <int MASK, typename acc_t, typename Fn>
bool lif_dispatch_static_flags(const LIFParams<acc_t>& p, Fn&& fn) {
  return lif_dispatch_static_flags<MASK>(p, fn, std::make_integer_sequence<int, kMathAll + 1>{});
}

// Host-side construction from Python doubles; every C++ launcher uses this one function (the
// CuPy path computes the same values in Python: cupy_lif.scalar_args).
template <typename acc_t>
inline LIFParams<acc_t> make_lif_params(double tau, double v_threshold, double v_reset,
                                        bool hard_reset, bool decay_input, double alpha,
                                        bool detach_reset) {
  LIFParams<acc_t> p;
  p.tau = acc_t(tau);
  p.inv_tau = acc_t(1) / p.tau;
  p.v_threshold = acc_t(v_threshold);
  p.v_reset = hard_reset ? acc_t(v_reset) : acc_t(0);
  p.alpha = acc_t(alpha);
  p.half_width = acc_t(0.5 / alpha);
  p.atan_scale = acc_t(1.5707963267948966 * alpha);
  p.flags = (hard_reset ? kMathHardReset : 0) | (decay_input ? kMathDecayInput : 0) |
            (detach_reset ? kMathDetachReset : 0) |
            (lif_tau_is_pow2(p.tau, p.inv_tau) ? kMathTauPow2 : 0);
  return p;
}
#endif

// a / tau, correctly rounded. For a power-of-two tau the multiply by 1/tau gives the same bits
// and costs one instruction, where an IEEE division costs about ten on the GPU (reciprocal,
// Newton steps, range check, slow-path branch) and a vdivps on the CPU.
template <typename acc_t, typename P>
LIF_HD acc_t lif_div_tau(acc_t a, const P& p) {
  return p.tau_pow2() ? a * p.inv_tau : a / p.tau;
}

// H[t] from V[t-1] and X[t].
template <typename acc_t, typename P>
LIF_HD acc_t lif_charge(acc_t v, acc_t x, const P& p) {
  // Soft reset's Vr is +0, and v - (+0) == v bit for bit (-0 and NaN included): skip it.
  const acc_t v_minus_vr = p.hard_reset() ? v - p.v_reset : v;
  return p.decay_input() ? v + lif_div_tau(x - v_minus_vr, p)
                         : v - lif_div_tau(v_minus_vr, p) + x;
}

// S[t] = heaviside(H[t] - v_threshold); H == threshold fires. Same test as the reference.
template <typename acc_t, typename P>
LIF_HD acc_t lif_fire(acc_t h, const P& p) {
  return (h - p.v_threshold >= acc_t(0)) ? acc_t(1) : acc_t(0);
}

// V[t] from H[t] and S[t] (s is exactly 0 or 1).
template <typename acc_t, typename P>
LIF_HD acc_t lif_reset(acc_t h, acc_t s, const P& p) {
  return p.hard_reset() ? s * p.v_reset + (acc_t(1) - s) * h : h - s * p.v_threshold;
}

template <typename acc_t>
LIF_HD acc_t lif_fabs(acc_t u) {
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
  return fabs(u);
#else
  return std::fabs(u);
#endif
}

// Rect window bit: 1{|H - v_threshold| < 0.5/alpha}.
template <typename acc_t, typename P>
LIF_HD bool lif_rect_window(acc_t h, const P& p) {
  // |u| by fabs: a free operand modifier on the GPU's compare; same result as the select
  // u < 0 ? -u : u for every u (they differ only in the sign of a zero).
  return lif_fabs(h - p.v_threshold) < p.half_width;
}

template <typename acc_t>
LIF_HD acc_t lif_exp(acc_t x) { return exp(x); }
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
template <>
LIF_HD float lif_exp<float>(float x) { return expf(x); }
#else
// Host fp32 exp written so the compiler vectorizes it (glibc's vector expf is only used under
// -ffast-math, which we avoid): Cody-Waite reduction, degree-7 Taylor polynomial, exponent by
// bit arithmetic. Relative error ~2e-7 (a few ulp). Only the Sigmoid surrogate's gradient uses
// it; it never decides a spike.
template <>
inline float lif_exp<float>(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float k = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  // round(x / ln2)
  const float r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-06f;
  float q = 1.0f / 5040;
  q = q * r + 1.0f / 720;
  q = q * r + 1.0f / 120;
  q = q * r + 1.0f / 24;
  q = q * r + 1.0f / 6;
  q = q * r + 0.5f;
  q = q * r + 1.0f;
  q = q * r + 1.0f;
  const int32_t e = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &e, sizeof(scale));
  return q * scale;
}
#endif

// dS/dH through the surrogate, u = H - v_threshold.
template <int SURR, typename acc_t, typename P>
LIF_HD acc_t lif_surrogate_grad(acc_t h, const P& p) {
  acc_t u = h - p.v_threshold;
  if (SURR == kRect) {
    return lif_rect_window(h, p) ? p.alpha : acc_t(0);
  } else if (SURR == kSigmoid) {
    acc_t sg = acc_t(1) / (acc_t(1) + lif_exp<acc_t>(-(p.alpha * u)));
    return p.alpha * sg * (acc_t(1) - sg);
  } else {
    acc_t z = p.atan_scale * u;
    return (p.alpha / acc_t(2)) / (acc_t(1) + z * z);
  }
}

// dV[t]/dH[t] given the surrogate gradient sg.
template <typename acc_t, typename P>
LIF_HD acc_t lif_dv_dh(acc_t h, acc_t s, acc_t sg, const P& p) {
  if (p.hard_reset()) {
    return p.detach_reset() ? acc_t(1) - s : (acc_t(1) - s) + (p.v_reset - h) * sg;
  }
  return p.detach_reset() ? acc_t(1) : acc_t(1) - p.v_threshold * sg;
}

// One backward step. In: dL/dS[t] (gs), dL/dV[t] accumulated so far (gv), H[t], S[t] and the
// surrogate gradient sg. Out: dL/dX[t] (returned) and dL/dV[t-1] (written to gv).
// The Rect + soft reset case calls it with h = s = 0: soft reset's dV/dH does not read them.
template <typename acc_t, typename P>
LIF_HD acc_t lif_backward_step(acc_t gs, acc_t& gv, acc_t h, acc_t s, acc_t sg, const P& p) {
  acc_t gh = gs * sg + gv * lif_dv_dh(h, s, sg, p);
  acc_t gh_tau = lif_div_tau(gh, p);
  gv = gh - gh_tau;  // dH[t]/dV[t-1] = 1 - 1/tau, written as autograd computes it
  return p.decay_input() ? gh_tau : gh;
}

}  // namespace tssd_fast
