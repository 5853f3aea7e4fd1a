// CUDA kernels of the fused multi-step LIF op, shared by two builds:
//   - the torch extension tssd_fast._C_cuda (csrc/cuda/lif_cuda.cu, nvcc, --fmad=false), which
//     wraps the bodies below in __global__ templates;
//   - the CuPy path (tssd_fast/ops/cupy_lif.py, NVRTC at run time): this file with lif_step.h
//     inlined, after a preamble that #defines the dtype and flags (LIF_STORAGE_T, LIF_ACC_T,
//     LIF_HARD_RESET, LIF_DECAY_INPUT, LIF_DETACH_RESET, LIF_SURROGATE) and
//     LIF_NVRTC_ENTRY_POINTS, which instantiates the extern "C" kernels at the end of this file.
// So this file includes no header beyond lif_step.h (NVRTC has no torch and no standard
// library): fp16 / bf16 are raw 16-bit storage types converted to fp32 with PTX / bit ops.
//
// Design (memory-bound): one thread owns VEC consecutive neurons and walks the time axis, so
// every row access is a coalesced VEC-wide vector load/store (16 bytes: VEC=4 for fp32, VEC=8 for
// fp16/bf16 in the nvcc build; the NVRTC build stops at VEC=4); the
// next step's inputs are loaded before the current step is computed (one step in flight ahead).
// Bytes moved per neuron-step are exactly the op's inputs and outputs, each touched once:
//   forward : x + spikes (2 x storage) [+ H (acc) | + 1/8 byte of window bits] [+ V (acc)]
//   backward: grad_s + grad_x (2 x storage) + H (acc) or 1/8 byte [+ grad_v_seq (acc)]
#pragma once

#include "../lif_step.h"

namespace tssd_fast {
namespace cuda {

typedef unsigned char lif_u8;
typedef unsigned short lif_u16;
typedef unsigned int lif_u32;
typedef long long lif_i64;

constexpr int kThreads = 256;  // threads per block of every LIF kernel

// What forward saves for backward (the op saves H, or the Rect window bits, or nothing).
enum SaveMode : int { kSaveNone = 0, kSaveH = 1, kSaveBits = 2 };

// Raw 16-bit storage types: same bits as at::Half / at::BFloat16 (and __half / __nv_bfloat16).
struct f16_t {
  lif_u16 bits;
};
struct bf16_t {
  lif_u16 bits;
};

// Storage -> compute type. Conversions are exact (fp16 / bf16 widen exactly to fp32).
__device__ __forceinline__ float lif_to_acc(float v) { return v; }
__device__ __forceinline__ double lif_to_acc(double v) { return v; }
__device__ __forceinline__ float lif_to_acc(f16_t v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
  return f;
}
__device__ __forceinline__ float lif_to_acc(bf16_t v) {
  return __uint_as_float(static_cast<lif_u32>(v.bits) << 16);
}

// Compute -> storage type, round to nearest even (as torch's conversions).
template <typename S, typename A>
__device__ __forceinline__ S lif_from_acc(A a);
template <>
__device__ __forceinline__ float lif_from_acc<float, float>(float a) { return a; }
template <>
__device__ __forceinline__ double lif_from_acc<double, double>(double a) { return a; }
template <>
__device__ __forceinline__ f16_t lif_from_acc<f16_t, float>(float a) {
  f16_t r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(a));
  return r;
}
template <>
__device__ __forceinline__ bf16_t lif_from_acc<bf16_t, float>(float a) {
  // c10::BFloat16's round-to-nearest-even (portable: cvt.rn.bf16.f32 needs sm_80).
  const lif_u32 u = __float_as_uint(a);
  bf16_t r;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    r.bits = 0x7fc0;  // NaN
  } else {
    r.bits = static_cast<lif_u16>((u + (((u >> 16) & 1u) + 0x7fffu)) >> 16);
  }
  return r;
}

// VEC elements of one row, loaded / stored as one aligned vector access.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ Vec<T, VEC> lif_vload(const T* p) {
  return *reinterpret_cast<const Vec<T, VEC>*>(p);
}
template <typename T, int VEC>
__device__ __forceinline__ void lif_vstore(T* p, const Vec<T, VEC>& v) {
  *reinterpret_cast<Vec<T, VEC>*>(p) = v;
}

// Forward over x [T, N] (row t at x + t*N), from v0 [N], or from the scalar v_init when v0 is
// null (no tensor for a fresh neuron's state). Thread i owns neurons [i*VEC, i*VEC + VEC);
// N % VEC == 0 and every pointer is aligned to VEC elements (the launchers check it).
// Reads x (+ v0); writes spikes and v_last, + H (kSaveH) or the bits (kSaveBits), + V (STORE_V).
// S: storage type, A: compute type. Writes spikes [T, N], v_last [N], and per the flags H [T, N],
// the window bits [ceil(T/8), N] (bit t%8 of row t/8) and V [T, N].
template <typename S, typename A, int VEC, int SAVE, bool STORE_V>
__device__ __forceinline__ void lif_forward_body(
    const S* __restrict__ x, const A* __restrict__ v0, A v_init, S* __restrict__ spikes,
    A* __restrict__ v_last, A* __restrict__ v_seq, A* __restrict__ h_saved,
    lif_u8* __restrict__ bits, lif_i64 T, lif_i64 N, const LIFParams<A>& p) {
  const lif_i64 n = (static_cast<lif_i64>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;
  if (n >= N) return;
  Vec<A, VEC> v;
  if (v0 != nullptr) {
    v = lif_vload<A, VEC>(v0 + n);
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) v.v[j] = v_init;
  }
  Vec<lif_u8, VEC> m;
#pragma unroll
  for (int j = 0; j < VEC; ++j) m.v[j] = 0;
  Vec<S, VEC> x_next = lif_vload<S, VEC>(x + n);
  lif_i64 off = n;
  for (lif_i64 t = 0; t < T; ++t, off += N) {
    const Vec<S, VEC> xt = x_next;
    if (t + 1 < T) x_next = lif_vload<S, VEC>(x + off + N);  // in flight during step t
    Vec<S, VEC> st;
    Vec<A, VEC> ht;
    const int bit = static_cast<int>(t & 7);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const A h = lif_charge<A>(v.v[j], lif_to_acc(xt.v[j]), p);
      const A s = lif_fire(h, p);
      st.v[j] = lif_from_acc<S, A>(s);
      ht.v[j] = h;
      if (SAVE == kSaveBits) {
        if (bit == 0) m.v[j] = 0;
        m.v[j] |= static_cast<lif_u8>(static_cast<lif_u8>(lif_rect_window(h, p)) << bit);
      }
      v.v[j] = lif_reset(h, s, p);
    }
    lif_vstore<S, VEC>(spikes + off, st);
    if (SAVE == kSaveH) lif_vstore<A, VEC>(h_saved + off, ht);
    if (SAVE == kSaveBits && (bit == 7 || t == T - 1)) {
      lif_vstore<lif_u8, VEC>(bits + (t >> 3) * N + n, m);
    }
    if (STORE_V) lif_vstore<A, VEC>(v_seq + off, v);
  }
  lif_vstore<A, VEC>(v_last + n, v);
}

// Backward (BPTT) over grad_s [T, N], from t = T-1 down to 0. BITS: the Rect + soft reset case,
// reading the window bits instead of H (sg = alpha * bit). grad_v_seq [T, N] and grad_v_last [N]
// may be null (no gradient). Writes grad_x [T, N] and grad_v0 [N]. Same layout rules as forward.
// Reads grad_s and H (or the bits) (+ grad_v_seq, grad_v_last); writes grad_x and grad_v0.
template <typename S, typename A, int VEC, int SURR, bool BITS>
__device__ __forceinline__ void lif_backward_body(
    const S* __restrict__ grad_s, const A* __restrict__ grad_v_seq,
    const A* __restrict__ grad_v_last, const A* __restrict__ h_saved,
    const lif_u8* __restrict__ bits, S* __restrict__ grad_x, A* __restrict__ grad_v0,
    lif_i64 T, lif_i64 N, const LIFParams<A>& p) {
  const lif_i64 n = (static_cast<lif_i64>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;
  if (n >= N) return;
  const bool has_gvs = grad_v_seq != nullptr;
  Vec<A, VEC> gv;
  if (grad_v_last != nullptr) {
    gv = lif_vload<A, VEC>(grad_v_last + n);
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) gv.v[j] = A(0);
  }
  lif_i64 off = (T - 1) * N + n;
  // Step T-1's inputs; inside the loop, step t-1's are loaded before step t is computed.
  Vec<S, VEC> gs_next = lif_vload<S, VEC>(grad_s + off);
  Vec<A, VEC> gvs_next, h_next;
  Vec<lif_u8, VEC> m;
  if (has_gvs) gvs_next = lif_vload<A, VEC>(grad_v_seq + off);
  if (BITS) {
    m = lif_vload<lif_u8, VEC>(bits + ((T - 1) >> 3) * N + n);
  } else {
    h_next = lif_vload<A, VEC>(h_saved + off);
  }
  for (lif_i64 t = T - 1; t >= 0; --t, off -= N) {
    const Vec<S, VEC> gst = gs_next;
    const Vec<A, VEC> gvst = gvs_next;
    const Vec<A, VEC> ht = h_next;
    if (t > 0) {
      gs_next = lif_vload<S, VEC>(grad_s + off - N);
      if (has_gvs) gvs_next = lif_vload<A, VEC>(grad_v_seq + off - N);
      if (!BITS) h_next = lif_vload<A, VEC>(h_saved + off - N);
    }
    const int bit = static_cast<int>(t & 7);
    Vec<S, VEC> gx;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      if (has_gvs) gv.v[j] += gvst.v[j];
      A g;
      if (BITS) {
        const A sg = ((m.v[j] >> bit) & 1) ? p.alpha : A(0);
        g = lif_backward_step<A>(lif_to_acc(gst.v[j]), gv.v[j], A(0), A(0), sg, p);
      } else {
        const A h = ht.v[j];
        const A sg = lif_surrogate_grad<SURR, A>(h, p);
        g = lif_backward_step<A>(lif_to_acc(gst.v[j]), gv.v[j], h, lif_fire(h, p), sg, p);
      }
      gx.v[j] = lif_from_acc<S, A>(g);
    }
    lif_vstore<S, VEC>(grad_x + off, gx);
    if (BITS && bit == 0 && t > 0) m = lif_vload<lif_u8, VEC>(bits + ((t >> 3) - 1) * N + n);
  }
  lif_vstore<A, VEC>(grad_v0 + n, gv);
}

}  // namespace cuda
}  // namespace tssd_fast

// ---------------------------------------------------------------------------------------------
// NVRTC entry points (CuPy path): one module per (dtype, hard_reset, decay_input, detach_reset,
// surrogate), the flags compile-time constants; the float scalars are kernel arguments, rounded
// to the compute type on the host exactly as make_lif_params does. Kernel names:
//   lif_fwd_v{VEC}_s{SAVE}_t{STORE_V}(x, v0, spikes, v_last, v_seq, h_saved, bits, T, N,
//                                      tau, v_threshold, v_reset, alpha, half_width, atan_scale)
//   lif_bwd_v{VEC}_b{BITS}(grad_s, grad_v_seq, grad_v_last, h_saved, bits, grad_x, grad_v0, T, N,
//                          tau, v_threshold, v_reset, alpha, half_width, atan_scale)
// ---------------------------------------------------------------------------------------------
#ifdef LIF_NVRTC_ENTRY_POINTS

namespace tssd_fast {
namespace cuda {
__device__ __forceinline__ LIFParams<LIF_ACC_T> lif_nvrtc_params(
    LIF_ACC_T tau, LIF_ACC_T v_threshold, LIF_ACC_T v_reset, LIF_ACC_T alpha,
    LIF_ACC_T half_width, LIF_ACC_T atan_scale) {
  LIFParams<LIF_ACC_T> p;
  p.tau = tau;
  p.v_threshold = v_threshold;
  p.v_reset = LIF_HARD_RESET ? v_reset : LIF_ACC_T(0);
  p.alpha = alpha;
  p.half_width = half_width;
  p.atan_scale = atan_scale;
  p.hard_reset = LIF_HARD_RESET != 0;
  p.decay_input = LIF_DECAY_INPUT != 0;
  p.detach_reset = LIF_DETACH_RESET != 0;
  return p;
}
}  // namespace cuda
}  // namespace tssd_fast

#define LIF_NVRTC_SCALAR_ARGS                                                        \
  LIF_ACC_T tau, LIF_ACC_T v_threshold, LIF_ACC_T v_reset, LIF_ACC_T alpha,          \
      LIF_ACC_T half_width, LIF_ACC_T atan_scale

#define LIF_NVRTC_FWD(VEC, SAVE, STORE_V)                                                      \
  extern "C" __global__ void __launch_bounds__(tssd_fast::cuda::kThreads)                      \
      lif_fwd_v##VEC##_s##SAVE##_t##STORE_V(                                                   \
          const LIF_STORAGE_T* __restrict__ x, const LIF_ACC_T* __restrict__ v0,              \
          LIF_STORAGE_T* __restrict__ spikes, LIF_ACC_T* __restrict__ v_last,                  \
          LIF_ACC_T* __restrict__ v_seq, LIF_ACC_T* __restrict__ h_saved,                      \
          tssd_fast::cuda::lif_u8* __restrict__ bits, tssd_fast::cuda::lif_i64 T,              \
          tssd_fast::cuda::lif_i64 N, LIF_NVRTC_SCALAR_ARGS) {                                 \
    const tssd_fast::LIFParams<LIF_ACC_T> p = tssd_fast::cuda::lif_nvrtc_params(             \
        tau, v_threshold, v_reset, alpha, half_width, atan_scale);                             \
    tssd_fast::cuda::lif_forward_body<LIF_STORAGE_T, LIF_ACC_T, VEC, SAVE, (STORE_V != 0)>(   \
        x, v0, LIF_ACC_T(0), spikes, v_last, v_seq, h_saved, bits, T, N, p);                   \
  }

#define LIF_NVRTC_BWD(VEC, BITS)                                                               \
  extern "C" __global__ void __launch_bounds__(tssd_fast::cuda::kThreads)                      \
      lif_bwd_v##VEC##_b##BITS(                                                                \
          const LIF_STORAGE_T* __restrict__ grad_s, const LIF_ACC_T* __restrict__ grad_v_seq,  \
          const LIF_ACC_T* __restrict__ grad_v_last, const LIF_ACC_T* __restrict__ h_saved,    \
          const tssd_fast::cuda::lif_u8* __restrict__ bits,                                    \
          LIF_STORAGE_T* __restrict__ grad_x, LIF_ACC_T* __restrict__ grad_v0,                 \
          tssd_fast::cuda::lif_i64 T, tssd_fast::cuda::lif_i64 N, LIF_NVRTC_SCALAR_ARGS) {     \
    const tssd_fast::LIFParams<LIF_ACC_T> p = tssd_fast::cuda::lif_nvrtc_params(             \
        tau, v_threshold, v_reset, alpha, half_width, atan_scale);                             \
    tssd_fast::cuda::lif_backward_body<LIF_STORAGE_T, LIF_ACC_T, VEC,                          \
                                       (BITS ? tssd_fast::kRect : LIF_SURROGATE), (BITS != 0)>( \
        grad_s, grad_v_seq, grad_v_last, h_saved, bits, grad_x, grad_v0, T, N, p);             \
  }

#define LIF_NVRTC_FWD_ALL(VEC) \
  LIF_NVRTC_FWD(VEC, 0, 0)     \
  LIF_NVRTC_FWD(VEC, 0, 1)     \
  LIF_NVRTC_FWD(VEC, 1, 0)     \
  LIF_NVRTC_FWD(VEC, 1, 1)     \
  LIF_NVRTC_FWD(VEC, 2, 0)     \
  LIF_NVRTC_FWD(VEC, 2, 1)

LIF_NVRTC_FWD_ALL(1)
LIF_NVRTC_FWD_ALL(2)
LIF_NVRTC_FWD_ALL(4)
LIF_NVRTC_BWD(1, 0)
LIF_NVRTC_BWD(2, 0)
LIF_NVRTC_BWD(4, 0)
#if LIF_SURROGATE == 0 && !LIF_HARD_RESET
LIF_NVRTC_BWD(1, 1)
LIF_NVRTC_BWD(2, 1)
LIF_NVRTC_BWD(4, 1)
#endif

#endif  // LIF_NVRTC_ENTRY_POINTS
