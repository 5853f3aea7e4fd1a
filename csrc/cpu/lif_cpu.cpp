// CPU launcher of the fused multi-step LIF op: parallel over neurons (torch's intra-op thread
// pool), time loop inside, and an innermost loop over a block of neurons that the compiler
// vectorizes. The per-step math comes from csrc/lif_step.h, shared with the CUDA kernels;
// checks, memory order and output allocation from csrc/lif_host.h (shared with CUDA too).
// Registered as the CPU kernel of tssd_fast::lif_forward / lif_backward (csrc/lif_op.cpp).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <type_traits>

#include "../lif_host.h"
#include "empty_cpu.h"

namespace tssd_fast {
namespace {

constexpr int64_t kBlock = 256;   // neurons per inner block: state fits in L1
constexpr int64_t kGrain = 4096;  // neurons per parallel task
// Flags fixed at compile time on the CPU: only the power-of-two tau, so its divide becomes a
// multiply in the vectorized loops. The reset / decay-input selects vectorize as they are.
constexpr int kCpuStaticFlags = kMathTauPow2;

template <typename T>
T* opt_ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// 16-bit storage (fp16, bf16; computed in float) is converted in loops of its own, through block
// buffers in float (staging), so the math loops see float only. With fp16 converted inside the
// math loop, gcc analysed the loop with 16-bit vector lanes, where the run-time reset /
// decay-input selects do not vectorize, and left the forward with saved bits and the backward
// scalar: fp16 training ran slower than the PyTorch reference loop. bf16's fused loops happened
// to vectorize; staged they run as fast, and no longer depend on that
// (benchmarks/results/cpu_2026-12-08_fp16.md).
template <typename scalar_t>
constexpr bool kStaged =
    std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>;

// The forward's math over one step of a block of nb neurons: x row in, spike row out (storage
// or staged rows), state v, window bits m (bit `bit`), H and V rows when saved.
// Plain functions with __restrict__ parameters, not lambda bodies: pointers captured by a lambda
// lose __restrict__, and the bit-saving loop then falls back to branchy scalar code.
template <typename acc_t, bool SAVE_H, bool SAVE_BITS, bool STORE_V, typename in_t,
          typename out_t, typename P>
inline void forward_step(const in_t* __restrict__ xt, out_t* __restrict__ st,
                         acc_t* __restrict__ v, uint32_t* __restrict__ m,
                         acc_t* __restrict__ ht, acc_t* __restrict__ vt, uint32_t bit,
                         int64_t nb, const P& p) {
  for (int64_t j = 0; j < nb; ++j) {
    const acc_t h = lif_charge<acc_t>(v[j], static_cast<acc_t>(xt[j]), p);
    const acc_t s = lif_fire(h, p);
    st[j] = static_cast<out_t>(s);
    if (SAVE_H) ht[j] = h;
    if (SAVE_BITS) m[j] |= lif_rect_window(h, p) ? bit : 0u;
    v[j] = lif_reset(h, s, p);
    if (STORE_V) vt[j] = v[j];
  }
}

// Forward over neurons [begin, end) of [T, N], from v0 (or v_init when v0 is null). SAVE_H: write
// H (non-Rect surrogates or hard reset). SAVE_BITS: write the Rect window bits. STORE_V: write
// V[t] for every t.
template <typename scalar_t, typename acc_t, bool SAVE_H, bool SAVE_BITS, bool STORE_V,
          typename P>
void forward_range(const scalar_t* __restrict__ x, const acc_t* __restrict__ v0, acc_t v_init,
                   scalar_t* __restrict__ spikes, acc_t* __restrict__ v_last,
                   acc_t* __restrict__ v_seq, acc_t* __restrict__ h_saved,
                   uint8_t* __restrict__ bits, int64_t T, int64_t N, const P p, int64_t begin,
                   int64_t end) {
  constexpr bool kStage = kStaged<scalar_t>;
  acc_t v[kBlock];
  uint32_t m[kBlock];  // 32-bit like the float lanes, so the loop vectorizes without narrowing
  acc_t xs[kStage ? kBlock : 1], ss[kStage ? kBlock : 1];  // staged x and spike rows
  for (int64_t n0 = begin; n0 < end; n0 += kBlock) {
    const int64_t nb = std::min(kBlock, end - n0);
    if (v0) {
      for (int64_t j = 0; j < nb; ++j) v[j] = v0[n0 + j];
    } else {
      std::fill(v, v + nb, v_init);
    }
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = t * N + n0;
      const scalar_t* __restrict__ xt = x + off;
      scalar_t* __restrict__ st = spikes + off;
      const uint32_t bit = 1u << (t & 7);
      if (SAVE_BITS && (t & 7) == 0) std::fill(m, m + nb, 0u);
      acc_t* ht = SAVE_H ? h_saved + off : nullptr;
      acc_t* vt = STORE_V ? v_seq + off : nullptr;
      if constexpr (kStage) {
        for (int64_t j = 0; j < nb; ++j) xs[j] = static_cast<acc_t>(xt[j]);
        forward_step<acc_t, SAVE_H, SAVE_BITS, STORE_V>(xs, ss, v, m, ht, vt, bit, nb, p);
        // a spike is exactly 0 or 1: a select of two bit patterns, not a general conversion
        const uint16_t one = scalar_t(1.0f).x;
        for (int64_t j = 0; j < nb; ++j) st[j].x = ss[j] != acc_t(0) ? one : uint16_t(0);
      } else {
        forward_step<acc_t, SAVE_H, SAVE_BITS, STORE_V>(xt, st, v, m, ht, vt, bit, nb, p);
      }
      if (SAVE_BITS && ((t & 7) == 7 || t == T - 1)) {
        uint8_t* __restrict__ row = bits + (t >> 3) * N + n0;
        for (int64_t j = 0; j < nb; ++j) row[j] = static_cast<uint8_t>(m[j]);
      }
    }
    for (int64_t j = 0; j < nb; ++j) v_last[n0 + j] = v[j];
  }
}

template <typename scalar_t, typename acc_t, bool SAVE_H, bool SAVE_BITS, bool STORE_V,
          typename P>
void forward_impl(const scalar_t* x, const acc_t* v0, acc_t v_init, scalar_t* spikes,
                  acc_t* v_last, acc_t* v_seq, acc_t* h_saved, uint8_t* bits, int64_t T,
                  int64_t N, const P p) {
  at::parallel_for(0, N, kGrain, [=](int64_t begin, int64_t end) {
    forward_range<scalar_t, acc_t, SAVE_H, SAVE_BITS, STORE_V, P>(
        x, v0, v_init, spikes, v_last, v_seq, h_saved, bits, T, N, p, begin, end);
  });
}

// The backward's math over one step of a block: grad_s row in, grad_x row out (storage or
// staged rows), dL/dV in gv. BITS: the surrogate is alpha inside the window bit `shift` of mrow
// (Rect + soft reset, whose dV/dH reads neither H nor S); else from the saved H row.
template <typename acc_t, int SURR, bool BITS, typename in_t, typename out_t, typename P>
inline void backward_step(const in_t* __restrict__ gst, out_t* __restrict__ gxt,
                          acc_t* __restrict__ gv, acc_t* __restrict__ sg,
                          const uint8_t* __restrict__ mrow, int shift,
                          const acc_t* __restrict__ ht, int64_t nb, const P& p) {
  if (BITS) {
    for (int64_t j = 0; j < nb; ++j) {
      const acc_t sgj = ((mrow[j] >> shift) & 1) ? p.alpha : acc_t(0);
      gxt[j] = static_cast<out_t>(lif_backward_step<acc_t>(
          static_cast<acc_t>(gst[j]), gv[j], acc_t(0), acc_t(0), sgj, p));
    }
  } else {
    // Surrogate first, in its own loop: fused with the step, the exp and the runtime
    // reset/detach selects defeat the vectorizer (measured 8x slower for Sigmoid).
    for (int64_t j = 0; j < nb; ++j) sg[j] = lif_surrogate_grad<SURR, acc_t>(ht[j], p);
    for (int64_t j = 0; j < nb; ++j) {
      const acc_t h = ht[j];
      gxt[j] = static_cast<out_t>(lif_backward_step<acc_t>(
          static_cast<acc_t>(gst[j]), gv[j], h, lif_fire(h, p), sg[j], p));
    }
  }
}

template <typename scalar_t, typename acc_t, int SURR, bool BITS, typename P>
void backward_range(const scalar_t* __restrict__ grad_s, const acc_t* __restrict__ grad_v_seq,
                    const acc_t* __restrict__ grad_v_last, const acc_t* __restrict__ h_saved,
                    const uint8_t* __restrict__ bits, scalar_t* __restrict__ grad_x,
                    acc_t* __restrict__ grad_v0, int64_t T, int64_t N, const P p, int64_t begin,
                    int64_t end) {
  constexpr bool kStage = kStaged<scalar_t>;
  acc_t gv[kBlock], sg[kBlock];
  acc_t gs_s[kStage ? kBlock : 1], gx_s[kStage ? kBlock : 1];  // staged grad_s and grad_x rows
  for (int64_t n0 = begin; n0 < end; n0 += kBlock) {
    const int64_t nb = std::min(kBlock, end - n0);
    for (int64_t j = 0; j < nb; ++j) gv[j] = grad_v_last ? grad_v_last[n0 + j] : acc_t(0);
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t off = t * N + n0;
      const scalar_t* __restrict__ gst = grad_s + off;
      scalar_t* __restrict__ gxt = grad_x + off;
      if (grad_v_seq) {
        for (int64_t j = 0; j < nb; ++j) gv[j] += grad_v_seq[off + j];
      }
      const uint8_t* mrow = BITS ? bits + (t >> 3) * N + n0 : nullptr;
      const int shift = static_cast<int>(t & 7);
      const acc_t* ht = BITS ? nullptr : h_saved + off;
      if constexpr (kStage) {
        for (int64_t j = 0; j < nb; ++j) gs_s[j] = static_cast<acc_t>(gst[j]);
        backward_step<acc_t, SURR, BITS>(gs_s, gx_s, gv, sg, mrow, shift, ht, nb, p);
        for (int64_t j = 0; j < nb; ++j) gxt[j] = static_cast<scalar_t>(gx_s[j]);
      } else {
        backward_step<acc_t, SURR, BITS>(gst, gxt, gv, sg, mrow, shift, ht, nb, p);
      }
    }
    if (grad_v0) {  // null: not wanted (no v0 tensor needs a gradient)
      for (int64_t j = 0; j < nb; ++j) grad_v0[n0 + j] = gv[j];
    }
  }
}

template <typename scalar_t, typename acc_t, int SURR, bool BITS, typename P>
void backward_impl(const scalar_t* grad_s, const acc_t* grad_v_seq, const acc_t* grad_v_last,
                   const acc_t* h_saved, const uint8_t* bits, scalar_t* grad_x, acc_t* grad_v0,
                   int64_t T, int64_t N, const P p) {
  at::parallel_for(0, N, kGrain, [=](int64_t begin, int64_t end) {
    backward_range<scalar_t, acc_t, SURR, BITS, P>(grad_s, grad_v_seq, grad_v_last, h_saved,
                                                   bits, grad_x, grad_v0, T, N, p, begin, end);
  });
}

// The launchers: flat [T, N] tensors, allocated and checked by csrc/lif_host.h.
void launch_forward(const ForwardArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "lif_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto params = params_from<acc_t>(a.tau, a.v_threshold, a.v_reset, a.alpha, a.flags);
    acc_t* vs = opt_ptr<acc_t>(a.v_seq);
    acc_t* hs = opt_ptr<acc_t>(a.h);
    uint8_t* bs = opt_ptr<uint8_t>(a.bits);
    lif_with_static_flags<kCpuStaticFlags>(params, [&](auto p) {
      using P = decltype(p);
      auto args = std::make_tuple(a.x.data_ptr<scalar_t>(), opt_ptr<acc_t>(a.v0),
                                  static_cast<acc_t>(a.v_init), a.spikes.data_ptr<scalar_t>(),
                                  a.v_last.data_ptr<acc_t>(), vs, hs, bs, a.T, a.N, p);
      // Instantiate only the flag combinations the op uses: H xor bits xor nothing saved.
      auto run = [&](auto save_h, auto save_bits) {
        constexpr bool kH = decltype(save_h)::value, kB = decltype(save_bits)::value;
        if (vs) {
          std::apply(forward_impl<scalar_t, acc_t, kH, kB, true, P>, args);
        } else {
          std::apply(forward_impl<scalar_t, acc_t, kH, kB, false, P>, args);
        }
      };
      if (hs) {
        run(std::true_type{}, std::false_type{});
      } else if (bs) {
        run(std::false_type{}, std::true_type{});
      } else {
        run(std::false_type{}, std::false_type{});
      }
    });
  });
}

void launch_backward(const BackwardArgs& a) {
  const int surrogate = flag_surrogate(a.flags);
  TORCH_CHECK(surrogate <= 2, "tssd_fast: unknown surrogate id ", surrogate);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, a.grad_s.scalar_type(), "lif_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const auto params = params_from<acc_t>(a.tau, a.v_threshold, a.v_reset, a.alpha,
                                               a.flags);
        lif_with_static_flags<kCpuStaticFlags>(params, [&](auto p) {
          using P = decltype(p);
          auto args = std::make_tuple(
              a.grad_s.data_ptr<scalar_t>(), opt_ptr<acc_t>(a.grad_v_seq),
              opt_ptr<acc_t>(a.grad_v_last), opt_ptr<acc_t>(a.h), opt_ptr<uint8_t>(a.bits),
              a.grad_x.data_ptr<scalar_t>(), opt_ptr<acc_t>(a.grad_v0), a.T, a.N, p);
          if (a.bits.defined()) {
            std::apply(backward_impl<scalar_t, acc_t, kRect, true, P>, args);
          } else if (surrogate == kRect) {
            std::apply(backward_impl<scalar_t, acc_t, kRect, false, P>, args);
          } else if (surrogate == kSigmoid) {
            std::apply(backward_impl<scalar_t, acc_t, kSigmoid, false, P>, args);
          } else {
            std::apply(backward_impl<scalar_t, acc_t, kATan, false, P>, args);
          }
        });
      });
}

}  // namespace
}  // namespace tssd_fast

TORCH_LIBRARY_IMPL(tssd_fast, CPU, m) {
  using tssd_fast::launch_backward;
  using tssd_fast::launch_forward;
  m.impl("lif_forward", &tssd_fast::lif_forward_on<c10::DeviceType::CPU, &launch_forward,
                                                   &tssd_fast::empty_cpu>);
  m.impl("lif_backward", &tssd_fast::lif_backward_on<c10::DeviceType::CPU, &launch_backward,
                                                     &tssd_fast::empty_cpu>);
}
