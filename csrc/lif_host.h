// Host side of the fused LIF op, shared by the CPU kernel (csrc/cpu/lif_cpu.cpp) and the CUDA
// kernel (csrc/cuda/lif_cuda.cpp): argument checks, the memory-order handling, output allocation.
// A device file only supplies the two launchers that run the recurrence over flat [T, N] memory.
//
// Memory order: the neuron is elementwise over the non-time dims, so the op runs in x's own
// memory order (e.g. channels_last) when time is its outermost dim, and hands back spikes /
// v_last / v_seq with x's strides, as torch's elementwise ops do; otherwise x is copied to
// contiguous. The saved H / window bits are internal: flat [T, N] / [rows, N] in that order.
// Only Tensor methods are used (no at:: free functions), so nvcc needs no more than
// <ATen/core/Tensor.h>.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "lif_step.h"

namespace tssd_fast {

// Bits of the op's `flags` argument (the same numbers as tssd_fast/ops/config.py).
enum LIFFlag : int64_t {
  kFlagHardReset = 1,
  kFlagDecayInput = 2,
  kFlagDetachReset = 4,
  kFlagStoreVSeq = 8,
  kFlagSave = 16,  // save H or the window bits for backward (the autograd formula sets it)
  // backward: compute grad_v0 (else it is an empty [0] tensor). A call from the scalar v_init
  // has no v0 to differentiate; its N * 4 bytes are a fifth of a bf16 T=2 backward's traffic.
  kFlagGradV0 = 128,
};
constexpr int kSurrogateShift = 5;  // surrogate id in bits 5-6

inline int flag_surrogate(int64_t flags) { return static_cast<int>((flags >> kSurrogateShift) & 3); }
inline bool flag_hard_reset(int64_t flags) { return (flags & kFlagHardReset) != 0; }
// Rect + soft reset: backward needs only the window bit, not H.
inline bool flag_saves_bits(int64_t flags) {
  return flag_surrogate(flags) == kRect && !flag_hard_reset(flags);
}

// The scalars of one call, converted once to the compute type.
template <typename acc_t>
LIFParams<acc_t> params_from(double tau, double v_threshold, double v_reset, double alpha,
                             int64_t flags) {
  return make_lif_params<acc_t>(tau, v_threshold, v_reset, flag_hard_reset(flags),
                                (flags & kFlagDecayInput) != 0, alpha,
                                (flags & kFlagDetachReset) != 0);
}

// lif_dispatch_static_flags (lif_step.h), with an error if no kernel matched p's flags.
template <int MASK, typename acc_t, typename Fn>
void lif_with_static_flags(const LIFParams<acc_t>& p, Fn&& fn) {
  TORCH_CHECK(lif_dispatch_static_flags<MASK>(p, fn), "tssd_fast: no kernel for flags ",
              p.flags);
}

// What a device launcher receives: flat [T, N] tensors in one memory order, every output
// allocated. Undefined tensors are absent (v0: start from v_init; v_seq / h / bits / grad_v0: not
// wanted; grad_v_seq / grad_v_last: no gradient).
struct ForwardArgs {
  at::Tensor x, v0, spikes, v_last, v_seq, h, bits;
  double v_init, tau, v_threshold, v_reset, alpha;
  int64_t flags, T, N;
};
struct BackwardArgs {
  at::Tensor grad_s, grad_v_seq, grad_v_last, h, bits, grad_x, grad_v0;
  double tau, v_threshold, v_reset, alpha;
  int64_t flags, T, N;
};
using ForwardLauncher = void (*)(const ForwardArgs&);
using BackwardLauncher = void (*)(const BackwardArgs&);
// The device's allocator, called without a second trip through the dispatcher (an output costs
// ~0.2 us this way, ~0.6 us through Tensor::new_empty: a per-call cost on small inputs).
using EmptyFn = at::Tensor (*)(c10::IntArrayRef sizes, at::ScalarType dtype,
                               const at::Tensor& like);

// The scalars and sizes both directions carry.
template <typename Args>
void set_scalars(Args& a, double tau, double v_threshold, double v_reset, double alpha,
                 int64_t flags, int64_t T, int64_t N) {
  a.tau = tau;
  a.v_threshold = v_threshold;
  a.v_reset = v_reset;
  a.alpha = alpha;
  a.flags = flags;
  a.T = T;
  a.N = N;
}

// Tests fill every fresh output with NaN (0xA5 for bytes) so an unwritten element cannot pass
// (tssd_fast.ops._alloc.poison sets this in each compiled module).
inline bool& poison_flag() {
  static bool on = false;
  return on;
}

inline at::Tensor fresh(EmptyFn empty, const at::Tensor& like, c10::IntArrayRef sizes,
                        at::ScalarType dtype) {
  at::Tensor t = empty(sizes, dtype, like);
  if (poison_flag() && t.numel() > 0) {
    if (t.is_floating_point()) {
      t.fill_(std::numeric_limits<double>::quiet_NaN());
    } else {
      t.fill_(0xA5);
    }
  }
  return t;
}

// x's dims, time first, in the order its memory is laid out; empty when x is contiguous or has
// no dense time-outermost order (then the op works on a contiguous copy). The same rule as
// tssd_fast.ops.config.memory_order (used by the fake implementation).
inline std::vector<int64_t> memory_order(const at::Tensor& x) {
  if (x.dim() <= 2 || x.is_contiguous()) return {};
  std::vector<int64_t> order(x.dim());
  std::iota(order.begin(), order.end(), 0);
  // Stable sort of dims 1.. by decreasing stride: ties (size-1 dims) keep their logical order.
  std::stable_sort(order.begin() + 1, order.end(),
                   [&](int64_t a, int64_t b) { return x.stride(a) > x.stride(b); });
  // x.permute(order).is_contiguous(), read off the strides: the view would be one more op
  // through the dispatcher on every call in this layout (size-1 dims' strides do not count)
  int64_t expected = 1;
  for (auto d = order.rbegin(); d != order.rend(); ++d) {
    if (x.size(*d) == 1) continue;
    if (x.stride(*d) != expected) return {};
    expected *= x.size(*d);
  }
  return order;
}

// "[2, 3]": sizes for an error message, formatted by hand (on the H200 machine of 2026-11-28 a
// TORCH_CHECK whose message streamed an IntArrayRef crashed the process instead of raising).
inline std::string shape_str(c10::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline std::vector<int64_t> inverse(const std::vector<int64_t>& order) {
  std::vector<int64_t> inv(order.size());
  for (size_t i = 0; i < order.size(); ++i) inv[order[i]] = static_cast<int64_t>(i);
  return inv;
}

// The permutation of the neuron dims (order without time, shifted down by one).
inline std::vector<int64_t> tail_order(const std::vector<int64_t>& order) {
  std::vector<int64_t> t;
  for (size_t i = 1; i < order.size(); ++i) t.push_back(order[i] - 1);
  return t;
}

inline at::Tensor permuted(const at::Tensor& t, const std::vector<int64_t>& order) {
  return order.empty() ? t : t.permute(order);
}

// A [T, *] and a [*] result computed in memory order `order`, viewed back in the input's dim
// order (the inverse permutations; an empty order leaves them as they are).
inline std::pair<at::Tensor, at::Tensor> in_input_order(const at::Tensor& seq,
                                                        const at::Tensor& state,
                                                        const std::vector<int64_t>& order) {
  return {permuted(seq, inverse(order)), permuted(state, inverse(tail_order(order)))};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_forward_host(
    const at::Tensor& x_in, const std::optional<at::Tensor>& v0_in, double v_init, double tau,
    double v_threshold, double v_reset, double alpha, int64_t flags, ForwardLauncher launch,
    EmptyFn empty) {
  TORCH_CHECK_TYPE(x_in.is_floating_point(), "the LIF input must be floating point, got ",
                   x_in.scalar_type(), ": convert it with x.float() (spike inputs too)");
  TORCH_CHECK_VALUE(x_in.dim() >= 1, "multi-step input must be [T, *] with at least one "
                    "dimension; got a 0-dim tensor (use step_mode='s' for single steps)");
  const at::ScalarType cdt = at::toOpMathType(x_in.scalar_type());
  const std::vector<int64_t> order = memory_order(x_in);
  const std::vector<int64_t> torder = tail_order(order);
  const at::Tensor x = permuted(x_in, order).contiguous();
  const int64_t T = x.size(0);
  const int64_t N = T > 0 ? x.numel() / T : c10::multiply_integers(x.sizes().slice(1));
  at::Tensor v0;
  if (v0_in.has_value() && v0_in->defined()) {
    if (v0_in->sizes() != x_in.sizes().slice(1)) {
      const std::string msg = "the neuron state has shape " + shape_str(v0_in->sizes()) +
                              " but the input needs " + shape_str(x_in.sizes().slice(1)) +
                              " (input " + shape_str(x_in.sizes()) +
                              ", [T, *]): call reset() on the neuron (or "
                              "tssd_fast.reset_net(model)) before feeding a new shape";
      TORCH_CHECK(false, msg);
    }
    if (v0_in->device() != x_in.device()) {
      const std::string msg = "the neuron state is on " + v0_in->device().str() +
                              " but the input is on " + x_in.device().str() +
                              ": call reset() after moving the model";
      TORCH_CHECK(false, msg);
    }
    v0 = permuted(*v0_in, torder).to(cdt).contiguous();
  }
  const bool save = (flags & kFlagSave) != 0;
  const bool bits = save && flag_saves_bits(flags);
  ForwardArgs a;
  a.x = x;
  a.v0 = v0;
  a.spikes = fresh(empty, x, x.sizes(), x.scalar_type());
  a.v_last = fresh(empty, x, x.sizes().slice(1), cdt);
  if (flags & kFlagStoreVSeq) a.v_seq = fresh(empty, x, x.sizes(), cdt);
  if (save && !bits) a.h = fresh(empty, x, {T, N}, cdt);
  if (bits) a.bits = fresh(empty, x, {lif_window_rows(static_cast<int>(T)), N}, at::kByte);
  a.v_init = v_init;
  set_scalars(a, tau, v_threshold, v_reset, alpha, flags, T, N);
  if (T == 0 || N == 0) {
    if (v0.defined()) {
      a.v_last.copy_(v0);
    } else {
      a.v_last.fill_(v_init);
    }
  } else {
    launch(a);
  }
  auto [spikes, v_last] = in_input_order(a.spikes, a.v_last, order);
  at::Tensor saved = bits ? a.bits : (save ? a.h : empty({0}, cdt, x));
  at::Tensor v_seq =
      a.v_seq.defined() ? permuted(a.v_seq, inverse(order)) : empty({0}, cdt, x);
  return {spikes, v_last, v_seq, saved};
}

// grad_s / grad_v_seq [T, *] and grad_v_last [*] in any layout; `order` is the memory order the
// forward ran in (memory_order(x), empty for contiguous), the order of the saved H / bits.
// Returns grad_x [T, *] and grad_v0: [*] with kFlagGradV0, else [0] (nothing computed).
inline std::tuple<at::Tensor, at::Tensor> lif_backward_host(
    const at::Tensor& grad_s_in, const std::optional<at::Tensor>& grad_v_seq_in,
    const std::optional<at::Tensor>& grad_v_last_in, const at::Tensor& saved, double tau,
    double v_threshold, double v_reset, double alpha, int64_t flags, c10::IntArrayRef order_in,
    BackwardLauncher launch, EmptyFn empty) {
  TORCH_CHECK_TYPE(grad_s_in.is_floating_point(), "lif_backward: grad_s must be floating point");
  TORCH_CHECK_VALUE(grad_s_in.dim() >= 1, "lif_backward: grad_s must be [T, *]");
  const std::vector<int64_t> order(order_in.begin(), order_in.end());
  TORCH_CHECK_VALUE(order.empty() || static_cast<int64_t>(order.size()) == grad_s_in.dim(),
                    "lif_backward: order must be empty or a permutation of grad_s's dims");
  const std::vector<int64_t> torder = tail_order(order);
  const at::ScalarType cdt = at::toOpMathType(grad_s_in.scalar_type());
  const at::Tensor gs = permuted(grad_s_in, order).contiguous();
  const int64_t T = gs.size(0);
  const int64_t N = T > 0 ? gs.numel() / T : c10::multiply_integers(gs.sizes().slice(1));
  BackwardArgs a;
  a.grad_s = gs;
  if (grad_v_seq_in.has_value() && grad_v_seq_in->defined() && grad_v_seq_in->numel() > 0) {
    TORCH_CHECK_VALUE(grad_v_seq_in->sizes() == grad_s_in.sizes(),
                      "lif_backward: grad_v_seq must have grad_s's shape");
    a.grad_v_seq = permuted(*grad_v_seq_in, order).to(cdt).contiguous();
  }
  if (grad_v_last_in.has_value() && grad_v_last_in->defined()) {
    TORCH_CHECK_VALUE(grad_v_last_in->sizes() == grad_s_in.sizes().slice(1),
                      "lif_backward: grad_v_last must have grad_s's shape without time");
    a.grad_v_last = permuted(*grad_v_last_in, torder).to(cdt).contiguous();
  }
  a.grad_x = fresh(empty, gs, gs.sizes(), gs.scalar_type());
  const bool want_gv0 = (flags & kFlagGradV0) != 0;
  if (want_gv0) a.grad_v0 = fresh(empty, gs, gs.sizes().slice(1), cdt);
  set_scalars(a, tau, v_threshold, v_reset, alpha, flags, T, N);
  if (T == 0 || N == 0) {
    if (want_gv0 && a.grad_v_last.defined()) {
      a.grad_v0.copy_(a.grad_v_last);
    } else if (want_gv0) {
      a.grad_v0.zero_();
    }
  } else {
    TORCH_CHECK(saved.device() == gs.device(), "lif_backward: saved is on ", saved.device(),
                " but grad_s is on ", gs.device());
    if (flag_saves_bits(flags)) {
      TORCH_CHECK(saved.scalar_type() == at::kByte && saved.dim() == 2 &&
                      saved.size(0) == lif_window_rows(static_cast<int>(T)) &&
                      saved.size(1) == N && saved.is_contiguous(),
                  "lif_backward: Rect + soft reset needs the window bits [ceil(T/8), N] uint8 "
                  "saved by lif_forward (call lif_forward with the save flag)");
      a.bits = saved;
    } else {
      TORCH_CHECK(saved.scalar_type() == cdt && saved.numel() == T * N &&
                      saved.is_contiguous(),
                  "lif_backward: needs H [T, N] in ", cdt, " saved by lif_forward (call "
                  "lif_forward with the save flag)");
      a.h = saved;
    }
    launch(a);
  }
  if (!want_gv0) return {permuted(a.grad_x, inverse(order)), empty({0}, cdt, gs)};
  auto [grad_x, grad_v0] = in_input_order(a.grad_x, a.grad_v0, order);
  return {grad_x, grad_v0};
}

// The device kernels as registered: a device check, then the shared host path with the device's
// launchers and allocator (csrc/cpu/lif_cpu.cpp and csrc/cuda/lif_cuda.cpp instantiate these).
template <c10::DeviceType D>
void check_device(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().type() == D, "tssd_fast: ", name, " must be a ", c10::DeviceTypeName(D),
              " tensor for this kernel, got ", t.device().str());
}

template <c10::DeviceType D, ForwardLauncher launch, EmptyFn empty>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lif_forward_on(
    const at::Tensor& x, const std::optional<at::Tensor>& v0, double v_init, double tau,
    double v_threshold, double v_reset, double alpha, int64_t flags) {
  check_device<D>(x, "x");
  return lif_forward_host(x, v0, v_init, tau, v_threshold, v_reset, alpha, flags, launch, empty);
}

template <c10::DeviceType D, BackwardLauncher launch, EmptyFn empty>
std::tuple<at::Tensor, at::Tensor> lif_backward_on(
    const at::Tensor& grad_s, const std::optional<at::Tensor>& grad_v_seq,
    const std::optional<at::Tensor>& grad_v_last, const at::Tensor& saved, double tau,
    double v_threshold, double v_reset, double alpha, int64_t flags, c10::IntArrayRef order) {
  check_device<D>(grad_s, "grad_s");
  return lif_backward_host(grad_s, grad_v_seq, grad_v_last, saved, tau, v_threshold, v_reset,
                           alpha, flags, order, launch, empty);
}

}  // namespace tssd_fast
