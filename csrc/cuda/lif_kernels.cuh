// CUDA kernels of the fused multi-step LIF op, shared by two builds:
//   - the torch extension tssd_fast._C_cuda (csrc/cuda/lif_launch.cuh, compiled per storage type
//     in lif_cuda_<dtype>.cu by nvcc, --fmad=false), which wraps the bodies below in __global__
//     templates;
//   - the CuPy path (tssd_fast/ops/cupy_lif.py, NVRTC at run time): this file with lif_step.h
//     inlined, after a preamble that #defines the dtype and flags (LIF_STORAGE_T, LIF_ACC_T,
//     LIF_MATH_FLAGS, LIF_SURROGATE) and LIF_NVRTC_ENTRY_POINTS, which instantiates the
//     extern "C" kernels at the end of this file.
// So this file includes no header beyond lif_step.h (NVRTC has no torch and no standard
// library): fp16 / bf16 are raw 16-bit storage types converted to fp32 with PTX / bit ops.
//
// Design (memory-bound): one thread owns VEC consecutive neurons and walks the time axis, so
// every row access is a coalesced VEC-wide vector load/store (16 bytes: VEC=4 for fp32, VEC=8 for
// fp16/bf16, in both the nvcc and the NVRTC build); the
// next step's inputs are loaded before the current step is computed (one step in flight ahead).
// The bodies take the parameters as any LIFParams<A, MASK, F>: with every flag static (the
// 16-byte kernels, the NVRTC kernels) the loop has no flag branch, and a power-of-two tau is a
// multiply. Instruction count matters: at 16 bytes per thread-step, a 16-bit kernel has half
// the bytes per element of fp32 to pay for the same per-element math (docs/DESIGN.md, "Kernels").
// Bytes moved per neuron-step are exactly the op's inputs and outputs, each touched once:
//   forward : x + spikes (2 x storage) [+ H (acc) | + 1/8 byte of window bits] [+ V (acc)]
//   backward: grad_s + grad_x (2 x storage) + H (acc) or 1/8 byte [+ grad_v_seq (acc)]
//   per neuron: forward [v0 (acc)] + v_last (acc); backward [grad_v_last] [+ grad_v0] (acc)
#pragma once

#include "../lif_step.h"

namespace tssd_fast {
namespace cuda {

typedef unsigned char lif_u8;
typedef unsigned short lif_u16;
typedef unsigned int lif_u32;
typedef long long lif_i64;

// Tuning switches, for benchmarks/cuda_variants.py to compile variants of these kernels and time
// them on a GPU. The defaults are the build's kernels: every switch off, 256 threads.
#ifndef LIF_THREADS
#define LIF_THREADS 256  // threads per block (and the kernels' launch bound)
#endif
#ifndef LIF_L2_PREFETCH
#define LIF_L2_PREFETCH 0  // >0: each step also prefetches into L2 the row that many steps
#endif                     // beyond the one it loads (more bytes in flight, no registers)
#ifndef LIF_STREAMING
#define LIF_STREAMING 0  // 1: every global access evict-first (ld/st.global.cs)
#endif

constexpr int kThreads = LIF_THREADS;  // threads per block of every LIF kernel
constexpr int kL2Prefetch = LIF_L2_PREFETCH;

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
  bf16_t r;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  // One instruction, and the same conversion torch's CUDA kernels use (c10::BFloat16 calls
  // __float2bfloat16 there): equal bits for every input, NaN included.
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(a));
#else
  // c10::BFloat16's round-to-nearest-even in bit operations (no cvt.rn.bf16.f32 before sm_80).
  const lif_u32 u = __float_as_uint(a);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    r.bits = 0x7fc0;  // NaN
  } else {
    r.bits = static_cast<lif_u16>((u + (((u >> 16) & 1u) + 0x7fffu)) >> 16);
  }
#endif
  return r;
}

// VEC elements of one row, loaded / stored as one aligned vector access.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

// With a tuning switch on, rows move as words through intrinsics: __ldcs / __stcs (evict-first)
// for LIF_STREAMING; __ldg for LIF_L2_PREFETCH, whose asm statement would otherwise stop the
// compiler from proving the inputs read-only (plain LDG instead of LDG.CONSTANT).
#if defined(__CUDA_ARCH__) && (LIF_STREAMING || LIF_L2_PREFETCH > 0)
#define LIF_WORD_ACCESS 1
// An unsigned type of B bytes (at most 16) that __ldg / __ldcs / __stcs take.
template <int B>
struct LifWord;
template <>
struct LifWord<1> {
  typedef unsigned char type;
};
template <>
struct LifWord<2> {
  typedef unsigned short type;
};
template <>
struct LifWord<4> {
  typedef unsigned int type;
};
template <>
struct LifWord<8> {
  typedef uint2 type;
};
template <>
struct LifWord<16> {
  typedef uint4 type;
};
#else
#define LIF_WORD_ACCESS 0
#endif

template <typename T, int VEC>
__device__ __forceinline__ Vec<T, VEC> lif_vload(const T* p) {
#if LIF_WORD_ACCESS
  typedef typename LifWord<(sizeof(T) * VEC < 16 ? sizeof(T) * VEC : 16)>::type W;
  Vec<T, VEC> v;
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(v) / sizeof(W)); ++i) {
    reinterpret_cast<W*>(&v)[i] = LIF_STREAMING ? __ldcs(reinterpret_cast<const W*>(p) + i)
                                                : __ldg(reinterpret_cast<const W*>(p) + i);
  }
  return v;
#else
  return *reinterpret_cast<const Vec<T, VEC>*>(p);
#endif
}
template <typename T, int VEC>
__device__ __forceinline__ void lif_vstore(T* p, const Vec<T, VEC>& v) {
#if LIF_WORD_ACCESS && LIF_STREAMING
  typedef typename LifWord<(sizeof(T) * VEC < 16 ? sizeof(T) * VEC : 16)>::type W;
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(v) / sizeof(W)); ++i) {
    __stcs(reinterpret_cast<W*>(p) + i, reinterpret_cast<const W*>(&v)[i]);
  }
#else
  *reinterpret_cast<Vec<T, VEC>*>(p) = v;
#endif
}

// A hint to bring the line at p into L2 (kL2Prefetch). A CPU build of the bodies (the tests'
// shim) may define LIF_HOST_PREFETCH(p) to see the addresses.
template <typename T>
__device__ __forceinline__ void lif_prefetch_l2(const T* p) {
#if defined(__CUDA_ARCH__)
  asm("prefetch.global.L2 [%0];" ::"l"(p));
#elif defined(LIF_HOST_PREFETCH)
  LIF_HOST_PREFETCH(p);
#else
  (void)p;
#endif
}

// Two fp16 / bf16 in one 32-bit word (lo at the lower address) <-> two fp32 values. On sm_80+
// one cvt.rn.{f16x2,bf16x2}.f32 converts a pair, with the rounding (and NaN) of the scalar
// conversions above; bf16 widens by a shift and a mask.
__device__ __forceinline__ lif_u32 lif_pack2(float lo, float hi, f16_t) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  lif_u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return lif_from_acc<f16_t, float>(lo).bits |
         (static_cast<lif_u32>(lif_from_acc<f16_t, float>(hi).bits) << 16);
#endif
}
__device__ __forceinline__ lif_u32 lif_pack2(float lo, float hi, bf16_t) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  lif_u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return lif_from_acc<bf16_t, float>(lo).bits |
         (static_cast<lif_u32>(lif_from_acc<bf16_t, float>(hi).bits) << 16);
#endif
}
__device__ __forceinline__ void lif_unpack2(lif_u32 w, float& lo, float& hi, f16_t) {
  lo = lif_to_acc(f16_t{static_cast<lif_u16>(w & 0xffffu)});
  hi = lif_to_acc(f16_t{static_cast<lif_u16>(w >> 16)});
}
__device__ __forceinline__ void lif_unpack2(lif_u32 w, float& lo, float& hi, bf16_t) {
  lo = __uint_as_float(w << 16);
  hi = __uint_as_float(w & 0xffff0000u);
}

// One row's VEC elements at p (aligned to VEC), widened to the compute type. 16-bit types move
// as 32-bit words, two elements each, so no 16-bit register shuffling sits between the 16-byte
// access and the math.
template <typename S, typename A, int VEC>
__device__ __forceinline__ void lif_load_row(const S* __restrict__ p, A (&out)[VEC]) {
  const Vec<S, VEC> v = lif_vload<S, VEC>(p);
#pragma unroll
  for (int j = 0; j < VEC; ++j) out[j] = lif_to_acc(v.v[j]);
}
template <typename S16, int VEC>
__device__ __forceinline__ void lif_load_row_16(const S16* __restrict__ p, float (&out)[VEC]) {
  if (VEC % 2 == 0) {
    const Vec<lif_u32, (VEC + 1) / 2> w =
        lif_vload<lif_u32, (VEC + 1) / 2>(reinterpret_cast<const lif_u32*>(p));
#pragma unroll
    for (int i = 0; 2 * i + 1 < VEC; ++i) lif_unpack2(w.v[i], out[2 * i], out[2 * i + 1], S16{});
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) out[j] = lif_to_acc(p[j]);
  }
}
template <int VEC>
__device__ __forceinline__ void lif_load_row(const f16_t* __restrict__ p, float (&out)[VEC]) {
  lif_load_row_16(p, out);
}
template <int VEC>
__device__ __forceinline__ void lif_load_row(const bf16_t* __restrict__ p, float (&out)[VEC]) {
  lif_load_row_16(p, out);
}

// VEC compute-type values stored as one row at p, rounded to nearest even (spikes, exactly 0 or
// 1, convert exactly).
template <typename S, typename A, int VEC>
__device__ __forceinline__ void lif_store_row(S* __restrict__ p, const A (&in)[VEC]) {
  Vec<S, VEC> v;
#pragma unroll
  for (int j = 0; j < VEC; ++j) v.v[j] = lif_from_acc<S, A>(in[j]);
  lif_vstore<S, VEC>(p, v);
}
template <typename S16, int VEC>
__device__ __forceinline__ void lif_store_row_16(S16* __restrict__ p, const float (&in)[VEC]) {
  if (VEC % 2 == 0) {
    Vec<lif_u32, (VEC + 1) / 2> w;
#pragma unroll
    for (int i = 0; 2 * i + 1 < VEC; ++i) w.v[i] = lif_pack2(in[2 * i], in[2 * i + 1], S16{});
    lif_vstore<lif_u32, (VEC + 1) / 2>(reinterpret_cast<lif_u32*>(p), w);
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) p[j] = lif_from_acc<S16, float>(in[j]);
  }
}
template <int VEC>
__device__ __forceinline__ void lif_store_row(f16_t* __restrict__ p, const float (&in)[VEC]) {
  lif_store_row_16(p, in);
}
template <int VEC>
__device__ __forceinline__ void lif_store_row(bf16_t* __restrict__ p, const float (&in)[VEC]) {
  lif_store_row_16(p, in);
}

// Forward over x [T, N] (row t at x + t*N), from v0 [N], or from the scalar v_init when v0 is
// null (no tensor for a fresh neuron's state). Thread i owns neurons [i*VEC, i*VEC + VEC);
// N % VEC == 0 and every pointer is aligned to VEC elements (the launchers check it).
// Reads x (+ v0); writes spikes and v_last, + H (kSaveH) or the bits (kSaveBits), + V when
// v_seq is not null. S: storage type, A: compute type, P: LIFParams<A, ...>. Writes spikes
// [T, N], v_last [N], and per the flags H [T, N], the window bits [ceil(T/8), N] (bit t%8 of row
// t/8) and V [T, N].
template <typename S, typename A, int VEC, int SAVE, bool STORE_V, typename P>
__device__ __forceinline__ void lif_forward_loop(
    const S* __restrict__ x, const A* __restrict__ v0, A v_init, S* __restrict__ spikes,
    A* __restrict__ v_last, A* __restrict__ v_seq, A* __restrict__ h_saved,
    lif_u8* __restrict__ bits, lif_i64 T, lif_i64 N, const P& p, lif_i64 n) {
  Vec<A, VEC> v;
  if (v0 != nullptr) {
    v = lif_vload<A, VEC>(v0 + n);
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) v.v[j] = v_init;
  }
  // Window bits: each step shifts a neuron's word left and ors in its bit (2 instructions, no
  // run-time shift amount, no clearing: older bytes move above bit 7); after a byte's steps,
  // __brev turns the word around so that step t % 8 lands on bit t % 8 of the stored byte.
  lif_u32 m[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) m[j] = 0;
  A x_next[VEC];
  lif_load_row<S, A, VEC>(x + n, x_next);
  // (kL2Prefetch) step t prefetches row t + 1 + kL2Prefetch; rows 2 .. kL2Prefetch before.
#pragma unroll
  for (int r = 2; r <= kL2Prefetch; ++r) {
    if (r < T) lif_prefetch_l2(x + r * N + n);
  }
  lif_i64 off = n;
  // Steps in groups of 8, one window-bit byte per group: the byte's store runs once per group
  // instead of being predicated off in 7 steps of 8.
  for (lif_i64 t0 = 0; t0 < T; t0 += 8) {
    const int steps = T - t0 < 8 ? static_cast<int>(T - t0) : 8;
    for (int k = 0; k < steps; ++k, off += N) {
      A xt[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) xt[j] = x_next[j];
      // Step t+1's row, in flight during step t; at t = T-1 row t again (a cache hit), so
      // the load needs no predicate and xt no register copies.
      lif_load_row<S, A, VEC>(x + (t0 + k + 1 < T ? off + N : off), x_next);
      if (kL2Prefetch > 0 && t0 + k + 1 + kL2Prefetch < T) {
        lif_prefetch_l2(x + off + (1 + kL2Prefetch) * N);
      }
      A st[VEC];
      Vec<A, VEC> ht;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const A h = lif_charge<A>(v.v[j], xt[j], p);
        st[j] = lif_fire(h, p);
        ht.v[j] = h;
        // shift the word left, the window bit in at bit 0: SEL + SHF.L.W (funnel shift)
        if (SAVE == kSaveBits) {
          m[j] = __funnelshift_l(lif_rect_window(h, p) ? 0x80000000u : 0u, m[j], 1);
        }
        v.v[j] = lif_reset(h, st[j], p);
      }
      lif_store_row<S, A, VEC>(spikes + off, st);
      if (SAVE == kSaveH) lif_vstore<A, VEC>(h_saved + off, ht);
      if (STORE_V) lif_vstore<A, VEC>(v_seq + off, v);
    }
    if (SAVE == kSaveBits) {
      Vec<lif_u8, VEC> mb;
#pragma unroll
      for (int j = 0; j < VEC; ++j) mb.v[j] = static_cast<lif_u8>(__brev(m[j]) >> (32 - steps));
      lif_vstore<lif_u8, VEC>(bits + (t0 >> 3) * N + n, mb);
    }
  }
  lif_vstore<A, VEC>(v_last + n, v);
}

template <typename S, typename A, int VEC, int SAVE, typename P>
__device__ __forceinline__ void lif_forward_body(
    const S* __restrict__ x, const A* __restrict__ v0, A v_init, S* __restrict__ spikes,
    A* __restrict__ v_last, A* __restrict__ v_seq, A* __restrict__ h_saved,
    lif_u8* __restrict__ bits, lif_i64 T, lif_i64 N, const P& p) {
  const lif_i64 n = (static_cast<lif_i64>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;
  if (n >= N) return;
  // One loop with the V[t] stores, one without: no branch for them inside the time loop.
  if (v_seq != nullptr) {
    lif_forward_loop<S, A, VEC, SAVE, true>(x, v0, v_init, spikes, v_last, v_seq, h_saved, bits,
                                            T, N, p, n);
  } else {
    lif_forward_loop<S, A, VEC, SAVE, false>(x, v0, v_init, spikes, v_last, v_seq, h_saved,
                                             bits, T, N, p, n);
  }
}

// Backward's rows at element offset `off` into L2: grad_s, + grad_v_seq, + H (kL2Prefetch).
template <bool HAS_GVS, bool BITS, typename S, typename A>
__device__ __forceinline__ void lif_prefetch_rows(const S* grad_s, const A* grad_v_seq,
                                                  const A* h_saved, lif_i64 off) {
  lif_prefetch_l2(grad_s + off);
  if (HAS_GVS) lif_prefetch_l2(grad_v_seq + off);
  if (!BITS) lif_prefetch_l2(h_saved + off);
}

// Backward (BPTT) over grad_s [T, N], from t = T-1 down to 0. BITS: the Rect + soft reset case,
// reading the window bits instead of H (sg = alpha * bit). grad_v_seq [T, N] and grad_v_last [N]
// may be null (no gradient); so may grad_v0 (not wanted: a call from the scalar v_init). Writes
// grad_x [T, N] and grad_v0 [N]. Same layout rules as forward.
// Reads grad_s and H (or the bits) (+ grad_v_seq, grad_v_last); writes grad_x (+ grad_v0).
template <typename S, typename A, int VEC, int SURR, bool BITS, bool HAS_GVS, typename P>
__device__ __forceinline__ void lif_backward_loop(
    const S* __restrict__ grad_s, const A* __restrict__ grad_v_seq,
    const A* __restrict__ grad_v_last, const A* __restrict__ h_saved,
    const lif_u8* __restrict__ bits, S* __restrict__ grad_x, A* __restrict__ grad_v0,
    lif_i64 T, lif_i64 N, const P& p, lif_i64 n) {
  Vec<A, VEC> gv;
  if (grad_v_last != nullptr) {
    gv = lif_vload<A, VEC>(grad_v_last + n);
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) gv.v[j] = A(0);
  }
  lif_i64 off = (T - 1) * N + n;
  // Step T-1's inputs; inside the loop, step t-1's are loaded before step t is computed, and a
  // byte row of window bits is loaded one group of 8 steps ahead.
  A gs_next[VEC];
  lif_load_row<S, A, VEC>(grad_s + off, gs_next);
  Vec<A, VEC> gvs_next, h_next;
  Vec<lif_u8, VEC> m_next;
  if (HAS_GVS) gvs_next = lif_vload<A, VEC>(grad_v_seq + off);
  if (BITS) {
    m_next = lif_vload<lif_u8, VEC>(bits + ((T - 1) >> 3) * N + n);
  } else {
    h_next = lif_vload<A, VEC>(h_saved + off);
  }
  // (kL2Prefetch) step t prefetches the rows of step t - 1 - kL2Prefetch; T-3 .. T-1-kL2Prefetch
  // before (the window bits, a byte per 8 steps, are left to the loads).
#pragma unroll
  for (int r = 2; r <= kL2Prefetch; ++r) {
    if (r < T) lif_prefetch_rows<HAS_GVS, BITS>(grad_s, grad_v_seq, h_saved, off - r * N);
  }
  // Byte rows from the last to the first; in row r, steps t = 8r + k for k = steps-1 .. 0.
  for (lif_i64 t0 = ((T - 1) >> 3) * 8; t0 >= 0; t0 -= 8) {
    const int steps = T - t0 < 8 ? static_cast<int>(T - t0) : 8;
    Vec<lif_u8, VEC> m;
    if (BITS) {
      m = m_next;
      if (t0 > 0) m_next = lif_vload<lif_u8, VEC>(bits + ((t0 >> 3) - 1) * N + n);
    }
    for (int k = steps - 1; k >= 0; --k, off -= N) {
      A gst[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) gst[j] = gs_next[j];
      const Vec<A, VEC> gvst = gvs_next;
      const Vec<A, VEC> ht = h_next;
      // Step t-1's rows, in flight during step t; at t = 0 row 0 again (no predicate).
      const lif_i64 prev = t0 + k > 0 ? off - N : off;
      lif_load_row<S, A, VEC>(grad_s + prev, gs_next);
      if (HAS_GVS) gvs_next = lif_vload<A, VEC>(grad_v_seq + prev);
      if (!BITS) h_next = lif_vload<A, VEC>(h_saved + prev);
      if (kL2Prefetch > 0 && t0 + k - 1 - kL2Prefetch >= 0) {
        lif_prefetch_rows<HAS_GVS, BITS>(grad_s, grad_v_seq, h_saved, off - (1 + kL2Prefetch) * N);
      }
      A gx[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        if (HAS_GVS) gv.v[j] += gvst.v[j];
        if (BITS) {
          const A sg = ((m.v[j] >> k) & 1) ? p.alpha : A(0);
          gx[j] = lif_backward_step<A>(gst[j], gv.v[j], A(0), A(0), sg, p);
        } else {
          const A h = ht.v[j];
          const A sg = lif_surrogate_grad<SURR, A>(h, p);
          gx[j] = lif_backward_step<A>(gst[j], gv.v[j], h, lif_fire(h, p), sg, p);
        }
      }
      lif_store_row<S, A, VEC>(grad_x + off, gx);
    }
  }
  if (grad_v0 != nullptr) lif_vstore<A, VEC>(grad_v0 + n, gv);  // null: not wanted
}

template <typename S, typename A, int VEC, int SURR, bool BITS, typename P>
__device__ __forceinline__ void lif_backward_body(
    const S* __restrict__ grad_s, const A* __restrict__ grad_v_seq,
    const A* __restrict__ grad_v_last, const A* __restrict__ h_saved,
    const lif_u8* __restrict__ bits, S* __restrict__ grad_x, A* __restrict__ grad_v0,
    lif_i64 T, lif_i64 N, const P& p) {
  const lif_i64 n = (static_cast<lif_i64>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;
  if (n >= N) return;
  // One loop with the grad_v_seq reads, one without (no branch for them in the time loop).
  if (grad_v_seq != nullptr) {
    lif_backward_loop<S, A, VEC, SURR, BITS, true>(grad_s, grad_v_seq, grad_v_last, h_saved,
                                                   bits, grad_x, grad_v0, T, N, p, n);
  } else {
    lif_backward_loop<S, A, VEC, SURR, BITS, false>(grad_s, grad_v_seq, grad_v_last, h_saved,
                                                    bits, grad_x, grad_v0, T, N, p, n);
  }
}

}  // namespace cuda
}  // namespace tssd_fast

// ---------------------------------------------------------------------------------------------
// NVRTC entry points (CuPy path): one module per (dtype, LIF_MATH_FLAGS, surrogate), the flags
// compile-time constants; VEC 1, 2, 4, and 8 for 16-bit storage (LIF_NVRTC_VEC8). The float
// scalars are kernel arguments, rounded to the compute type on the host exactly as
// make_lif_params does. Kernel names:
//   lif_fwd_v{VEC}_s{SAVE}(x, v0, spikes, v_last, v_seq, h_saved, bits, T, N,
//                          tau, inv_tau, v_threshold, v_reset, alpha, half_width, atan_scale,
//                          v_init)   (v0 null: every neuron starts at v_init)
//   lif_bwd_v{VEC}_b{BITS}(grad_s, grad_v_seq, grad_v_last, h_saved, bits, grad_x, grad_v0, T, N,
//                          tau, inv_tau, v_threshold, v_reset, alpha, half_width, atan_scale)
// ---------------------------------------------------------------------------------------------
#ifdef LIF_NVRTC_ENTRY_POINTS

namespace tssd_fast {
namespace cuda {
using LIFNvrtcParams = LIFParams<LIF_ACC_T, kMathAll, LIF_MATH_FLAGS>;
__device__ __forceinline__ LIFNvrtcParams lif_nvrtc_params(
    LIF_ACC_T tau, LIF_ACC_T inv_tau, LIF_ACC_T v_threshold, LIF_ACC_T v_reset,
    LIF_ACC_T alpha, LIF_ACC_T half_width, LIF_ACC_T atan_scale) {
  return {tau,   inv_tau,    v_threshold, (LIF_MATH_FLAGS & kMathHardReset) ? v_reset : LIF_ACC_T(0),
          alpha, half_width, atan_scale,  LIF_MATH_FLAGS};
}
}  // namespace cuda
}  // namespace tssd_fast

// LIF_MIN_BLOCKS (a tuning switch of the NVRTC build only): ask ptxas for that many resident
// blocks per SM, i.e. at most 65536 / (LIF_MIN_BLOCKS * kThreads) registers per thread.
#if defined(LIF_MIN_BLOCKS) && LIF_MIN_BLOCKS > 0
#define LIF_NVRTC_BOUNDS __launch_bounds__(tssd_fast::cuda::kThreads, LIF_MIN_BLOCKS)
#else
#define LIF_NVRTC_BOUNDS __launch_bounds__(tssd_fast::cuda::kThreads)
#endif

#define LIF_NVRTC_SCALAR_ARGS                                                              \
  LIF_ACC_T tau, LIF_ACC_T inv_tau, LIF_ACC_T v_threshold, LIF_ACC_T v_reset,              \
      LIF_ACC_T alpha, LIF_ACC_T half_width, LIF_ACC_T atan_scale
#define LIF_NVRTC_PARAMS                                                                   \
  tssd_fast::cuda::lif_nvrtc_params(tau, inv_tau, v_threshold, v_reset, alpha, half_width, \
                                    atan_scale)

#define LIF_NVRTC_FWD(VEC, SAVE)                                                               \
  extern "C" __global__ void LIF_NVRTC_BOUNDS                                                  \
      lif_fwd_v##VEC##_s##SAVE(                                                                \
          const LIF_STORAGE_T* __restrict__ x, const LIF_ACC_T* __restrict__ v0,              \
          LIF_STORAGE_T* __restrict__ spikes, LIF_ACC_T* __restrict__ v_last,                  \
          LIF_ACC_T* __restrict__ v_seq, LIF_ACC_T* __restrict__ h_saved,                      \
          tssd_fast::cuda::lif_u8* __restrict__ bits, tssd_fast::cuda::lif_i64 T,              \
          tssd_fast::cuda::lif_i64 N, LIF_NVRTC_SCALAR_ARGS, LIF_ACC_T v_init) {               \
    tssd_fast::cuda::lif_forward_body<LIF_STORAGE_T, LIF_ACC_T, VEC, SAVE>(                    \
        x, v0, v_init, spikes, v_last, v_seq, h_saved, bits, T, N, LIF_NVRTC_PARAMS);          \
  }

#define LIF_NVRTC_BWD(VEC, BITS)                                                               \
  extern "C" __global__ void LIF_NVRTC_BOUNDS                                                  \
      lif_bwd_v##VEC##_b##BITS(                                                                \
          const LIF_STORAGE_T* __restrict__ grad_s, const LIF_ACC_T* __restrict__ grad_v_seq,  \
          const LIF_ACC_T* __restrict__ grad_v_last, const LIF_ACC_T* __restrict__ h_saved,    \
          const tssd_fast::cuda::lif_u8* __restrict__ bits,                                    \
          LIF_STORAGE_T* __restrict__ grad_x, LIF_ACC_T* __restrict__ grad_v0,                 \
          tssd_fast::cuda::lif_i64 T, tssd_fast::cuda::lif_i64 N, LIF_NVRTC_SCALAR_ARGS) {     \
    tssd_fast::cuda::lif_backward_body<LIF_STORAGE_T, LIF_ACC_T, VEC,                          \
                                       (BITS ? tssd_fast::kRect : LIF_SURROGATE), (BITS != 0)>( \
        grad_s, grad_v_seq, grad_v_last, h_saved, bits, grad_x, grad_v0, T, N,                 \
        LIF_NVRTC_PARAMS);                                                                     \
  }

#define LIF_NVRTC_FWD_ALL(VEC) \
  LIF_NVRTC_FWD(VEC, 0)        \
  LIF_NVRTC_FWD(VEC, 1)        \
  LIF_NVRTC_FWD(VEC, 2)

// LIF_NVRTC_WIDE_ONLY (benchmarks/cuda_variants.py): only the 16-byte entry points (VEC 4 for
// fp32, 8 for 16-bit storage), the ones the tuning sweep times; a quarter of the compile time.
#ifndef LIF_NVRTC_WIDE_ONLY
#define LIF_NVRTC_WIDE_ONLY 0
#endif
#define LIF_NVRTC_RECT_BITS (LIF_SURROGATE == 0 && !(LIF_MATH_FLAGS & 1))
#if !LIF_NVRTC_WIDE_ONLY
LIF_NVRTC_FWD_ALL(1)
LIF_NVRTC_FWD_ALL(2)
LIF_NVRTC_BWD(1, 0)
LIF_NVRTC_BWD(2, 0)
#if LIF_NVRTC_RECT_BITS
LIF_NVRTC_BWD(1, 1)
LIF_NVRTC_BWD(2, 1)
#endif
#endif
#if !LIF_NVRTC_WIDE_ONLY || !LIF_NVRTC_VEC8
LIF_NVRTC_FWD_ALL(4)
LIF_NVRTC_BWD(4, 0)
#if LIF_NVRTC_RECT_BITS
LIF_NVRTC_BWD(4, 1)
#endif
#endif
// 16-bit storage: 8 elements = 16 bytes per thread and row, as the nvcc build.
#if LIF_NVRTC_VEC8
LIF_NVRTC_FWD_ALL(8)
LIF_NVRTC_BWD(8, 0)
#if LIF_NVRTC_RECT_BITS
LIF_NVRTC_BWD(8, 1)
#endif
#endif

#endif  // LIF_NVRTC_ENTRY_POINTS
