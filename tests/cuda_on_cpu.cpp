// The CUDA kernel bodies of csrc/cuda/lif_kernels.cuh compiled for the CPU, for
// tests/test_cuda_bodies_on_cpu.py: the few CUDA built-ins the bodies use are defined here, and
// a launch runs every (block, thread) of the grid in turn. So the bodies' indexing, time loops,
// prefetch, window-bit packing, vector loads and stores and 16-bit packing run without a GPU,
// for fp32, bf16 and fp64 (fp16 converts with PTX only). On the GPU, bf16 converts with
// cvt.rn.bf16(x2).f32 (sm_80+); here with the bit-exact software rounding it replaces.
// Built with g++ by the test into a shared library called through ctypes (no torch headers).
#include <cstdint>
#include <cstdlib>
#include <cstring>

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(x)

struct LifDim3 {
  unsigned int x;
};
static LifDim3 blockIdx, threadIdx, blockDim;

inline unsigned int __brev(unsigned int x) {
  unsigned int r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned int __funnelshift_l(unsigned int lo, unsigned int hi, unsigned int shift) {
  shift &= 31u;
  return shift ? (hi << shift) | (lo >> (32 - shift)) : hi;
}
inline float __uint_as_float(unsigned int u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline unsigned int __float_as_uint(float f) {
  unsigned int u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

#ifdef LIF_TEST_PREFETCH
// Built with the tuning switch LIF_L2_PREFETCH on: every L2 prefetch the bodies issue is
// recorded, for the test to check which rows were prefetched (each beyond the first loads once,
// nothing outside the inputs).
#include <vector>
static std::vector<uintptr_t> g_prefetches;
inline void lif_emu_record_prefetch(const void* p) {
  g_prefetches.push_back(reinterpret_cast<uintptr_t>(p));
}
#define LIF_HOST_PREFETCH(p) lif_emu_record_prefetch(p)
extern "C" int64_t lif_emu_prefetch_count() { return static_cast<int64_t>(g_prefetches.size()); }
extern "C" void lif_emu_prefetch_copy(uint64_t* out) {
  for (size_t i = 0; i < g_prefetches.size(); ++i) out[i] = g_prefetches[i];
}
extern "C" void lif_emu_prefetch_clear() { g_prefetches.clear(); }
#endif

#include "../csrc/cuda/lif_kernels.cuh"

using namespace tssd_fast;
using namespace tssd_fast::cuda;

namespace {

constexpr unsigned int kEmuThreads = 256;

template <typename F>
void run_grid(int64_t N, int vec, F&& body) {
  const int64_t work = (N + vec - 1) / vec;
  blockDim.x = kEmuThreads;
  for (int64_t b = 0; b * kEmuThreads < work; ++b) {
    blockIdx.x = static_cast<unsigned int>(b);
    for (unsigned int t = 0; t < kEmuThreads; ++t) {
      threadIdx.x = t;
      body();
    }
  }
}

// Calls f(params) with p's flags static (static_flags != 0, through lif_step.h's dispatcher, as
// the CUDA launchers) or run-time.
template <typename A, typename F>
void with_params(const LIFParams<A>& p, int static_flags, F&& f) {
  if (!static_flags) {
    f(p);
  } else if (!lif_dispatch_static_flags<kMathAll>(p, f)) {
    std::abort();
  }
}

// The two widths the CUDA launchers use: 16 bytes of storage (flags static or run-time, as
// asked), and 1 (flags run-time only, as in lif_launch.cuh).
template <typename S, typename A, typename F>
void with_vec_and_params(int vec, const LIFParams<A>& p, int static_flags, F&& f) {
  constexpr int kVec16 = static_cast<int>(16 / sizeof(S));
  if (vec == kVec16) {
    with_params(p, static_flags,
                [&](const auto& q) { f(std::integral_constant<int, kVec16>{}, q); });
  } else {
    f(std::integral_constant<int, 1>{}, p);
  }
}

template <typename S, typename A>
void forward_typed(int vec, int save, int static_flags, const void* x, const void* v0,
                   double v_init, void* spikes, void* v_last, void* v_seq, void* h, void* bits,
                   int64_t T, int64_t N, const LIFParams<A>& params) {
  with_vec_and_params<S>(vec, params, static_flags, [&](auto vec_c, const auto& p) {
    constexpr int V = decltype(vec_c)::value;
    {
      auto go = [&](auto save_c) {
        constexpr int SV = decltype(save_c)::value;
        run_grid(N, V, [&] {
          lif_forward_body<S, A, V, SV>(
              static_cast<const S*>(x), static_cast<const A*>(v0), static_cast<A>(v_init),
              static_cast<S*>(spikes), static_cast<A*>(v_last), static_cast<A*>(v_seq),
              static_cast<A*>(h), static_cast<lif_u8*>(bits), T, N, p);
        });
      };
      if (save == kSaveH) {
        go(std::integral_constant<int, kSaveH>{});
      } else if (save == kSaveBits) {
        go(std::integral_constant<int, kSaveBits>{});
      } else {
        go(std::integral_constant<int, kSaveNone>{});
      }
    }
  });
}

template <typename S, typename A>
void backward_typed(int vec, int surrogate, int use_bits, int static_flags, const void* grad_s,
                    const void* grad_v_seq, const void* grad_v_last, const void* h,
                    const void* bits, void* grad_x, void* grad_v0, int64_t T, int64_t N,
                    const LIFParams<A>& params) {
  with_vec_and_params<S>(vec, params, static_flags, [&](auto vec_c, const auto& p) {
    constexpr int V = decltype(vec_c)::value;
    {
      auto go = [&](auto surr_c, auto bits_c) {
        constexpr int SU = decltype(surr_c)::value;
        constexpr bool B = decltype(bits_c)::value;
        run_grid(N, V, [&] {
          lif_backward_body<S, A, V, SU, B>(
              static_cast<const S*>(grad_s), static_cast<const A*>(grad_v_seq),
              static_cast<const A*>(grad_v_last), static_cast<const A*>(h),
              static_cast<const lif_u8*>(bits), static_cast<S*>(grad_x),
              static_cast<A*>(grad_v0), T, N, p);
        });
      };
      if (use_bits) {
        go(std::integral_constant<int, kRect>{}, std::true_type{});
      } else if (surrogate == kRect) {
        go(std::integral_constant<int, kRect>{}, std::false_type{});
      } else if (surrogate == kSigmoid) {
        go(std::integral_constant<int, kSigmoid>{}, std::false_type{});
      } else {
        go(std::integral_constant<int, kATan>{}, std::false_type{});
      }
    }
  });
}

}  // namespace

// dtype: 0 fp32, 1 bf16, 2 fp64. Null pointers: absent tensors, as in the CUDA launchers.
extern "C" int lif_emu_forward(int dtype, int vec, int save, int static_flags, const void* x,
                               const void* v0, double v_init, void* spikes, void* v_last,
                               void* v_seq, void* h, void* bits, int64_t T, int64_t N,
                               double tau, double v_threshold, double v_reset, double alpha,
                               int hard_reset, int decay_input, int detach_reset) {
  if (dtype == 2) {
    const auto p = make_lif_params<double>(tau, v_threshold, v_reset, hard_reset, decay_input,
                                           alpha, detach_reset);
    forward_typed<double, double>(vec, save, static_flags, x, v0, v_init, spikes, v_last, v_seq,
                                  h, bits, T, N, p);
    return 0;
  }
  const auto p = make_lif_params<float>(tau, v_threshold, v_reset, hard_reset, decay_input,
                                        alpha, detach_reset);
  if (dtype == 0) {
    forward_typed<float, float>(vec, save, static_flags, x, v0, v_init, spikes, v_last, v_seq, h,
                                bits, T, N, p);
  } else if (dtype == 1) {
    forward_typed<bf16_t, float>(vec, save, static_flags, x, v0, v_init, spikes, v_last, v_seq,
                                 h, bits, T, N, p);
  } else {
    return 1;
  }
  return 0;
}

extern "C" int lif_emu_backward(int dtype, int vec, int surrogate, int use_bits,
                                int static_flags, const void* grad_s, const void* grad_v_seq,
                                const void* grad_v_last, const void* h, const void* bits,
                                void* grad_x, void* grad_v0, int64_t T, int64_t N, double tau,
                                double v_threshold, double v_reset, double alpha,
                                int hard_reset, int decay_input, int detach_reset) {
  if (dtype == 2) {
    const auto p = make_lif_params<double>(tau, v_threshold, v_reset, hard_reset, decay_input,
                                           alpha, detach_reset);
    backward_typed<double, double>(vec, surrogate, use_bits, static_flags, grad_s, grad_v_seq,
                                   grad_v_last, h, bits, grad_x, grad_v0, T, N, p);
    return 0;
  }
  const auto p = make_lif_params<float>(tau, v_threshold, v_reset, hard_reset, decay_input,
                                        alpha, detach_reset);
  if (dtype == 0) {
    backward_typed<float, float>(vec, surrogate, use_bits, static_flags, grad_s, grad_v_seq,
                                 grad_v_last, h, bits, grad_x, grad_v0, T, N, p);
  } else if (dtype == 1) {
    backward_typed<bf16_t, float>(vec, surrogate, use_bits, static_flags, grad_s, grad_v_seq,
                                  grad_v_last, h, bits, grad_x, grad_v0, T, N, p);
  } else {
    return 1;
  }
  return 0;
}
