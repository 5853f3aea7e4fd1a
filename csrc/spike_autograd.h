// What the spike-input layers' C++ autograd formulas share (csrc/spike_ops.cpp: the packed
// convolution and linear layer; csrc/conv_bn_op.cpp: conv + BatchNorm with recompute): keeping
// the layer input for backward and restoring it (the twin of spike_layers._keep_input /
// _restore_input), the convolution's gradient as autograd's formula computes it, and
// once-differentiability.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/convolution_backward.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>  // DelayedError

#include <array>
#include <optional>
#include <vector>

#include "spike_pack_host.h"  // read_as_it_lies, contiguous_strides

namespace tssd_fast {
namespace spike_autograd {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

inline const c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, int64_t, int64_t)>&
pack_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tssd_fast::pack_spikes", "")
                             .typed<at::Tensor(const at::Tensor&, int64_t, int64_t)>();
  return op;
}

using UnpackSig = at::Tensor(const at::Tensor&, c10::IntArrayRef, c10::IntArrayRef,
                             at::ScalarType, int64_t, int64_t);
inline const c10::TypedOperatorHandle<UnpackSig>& unpack_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tssd_fast::unpack_spikes", "")
                             .typed<UnpackSig>();
  return op;
}

inline at::Tensor cast(const at::Tensor& t, at::ScalarType dtype) {
  return !t.defined() || t.scalar_type() == dtype ? t : t.to(dtype);
}

inline at::Tensor value_or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() ? *t : at::Tensor();
}

// Whether a call records a graph: grad mode on and an input that needs a gradient.
inline bool records_grad(std::initializer_list<at::Tensor> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const auto& t : inputs) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

// The layer input x as backward keeps it, chosen by the caller:
//   repeat_T > 0: a direct-encoded x is its image batch repeat_base [B, ...] at each of
//                 repeat_T steps: the batch itself, once;
//   bits > 0:     x's bit planes (code: bits, divisor), with what unpacks them in ctx;
//   otherwise:    x as it is.
// Returns the tensor to save; restore_kept gives x back (in dtype) from it.
inline at::Tensor keep_input(AutogradContext* ctx, const at::Tensor& x, int64_t bits,
                             int64_t divisor, const std::optional<at::Tensor>& repeat_base,
                             int64_t repeat_T) {
  ctx->saved_data["repeat_T"] = repeat_T;
  ctx->saved_data["dtype"] = x.scalar_type();
  if (repeat_T > 0) return *repeat_base;
  ctx->saved_data["code"] = std::vector<int64_t>{bits, divisor};
  if (bits <= 0) return x;
  ctx->saved_data["size"] = x.sizes();
  ctx->saved_data["strides"] =
      read_as_it_lies(x) ? x.strides().vec() : contiguous_strides(x.sizes());
  return pack_op().call(x, bits, divisor);
}

inline at::ScalarType kept_dtype(AutogradContext* ctx) {
  return ctx->saved_data["dtype"].toScalarType();
}

inline at::Tensor restore_kept(AutogradContext* ctx, const at::Tensor& kept) {
  const int64_t repeat_T = ctx->saved_data["repeat_T"].toInt();
  if (repeat_T > 0) {  // the image batch [B, ...]: expanded over time as the forward's x
    std::vector<int64_t> sizes = kept.sizes().vec();
    sizes.insert(sizes.begin(), repeat_T);
    return kept.unsqueeze(0).expand(sizes).flatten(0, 1);
  }
  const auto code = ctx->saved_data["code"].toIntVector();
  if (code[0] <= 0) return kept;
  return unpack_op().call(kept, ctx->saved_data["size"].toIntVector(),
                          ctx->saved_data["strides"].toIntVector(), kept_dtype(ctx), code[0],
                          code[1]);
}

inline void check_repeat(const at::Tensor& x, const std::optional<at::Tensor>& repeat_base,
                         int64_t repeat_T, const char* op) {
  TORCH_CHECK(repeat_T <= 0 || (repeat_base.has_value() && repeat_base->defined() &&
                                repeat_base->dim() == x.dim() &&
                                repeat_base->size(0) * repeat_T == x.size(0)),
              "tssd_fast: ", op, ": repeat_T > 0 needs repeat_base [B, ...] with T*B = x's "
              "first size");
}

// A 2-D convolution's stride, padding, dilation and groups, as saved in ctx.
inline std::vector<int64_t> conv_geometry(c10::IntArrayRef stride, c10::IntArrayRef padding,
                                          c10::IntArrayRef dilation, int64_t groups,
                                          const char* op) {
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, "tssd_fast: ",
              op, " takes 2 strides, paddings and dilations");
  return {stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups};
}

// The gradients of y = conv2d(x, weight, bias) (geometry g) as autograd's formula computes them:
// convolution_backward in the compute dtype of grad (autocast's, or the input's), each result
// cast back to its input's dtype (autocast's casts are differentiable). x is the restored input;
// mask[2] is false without a bias.
inline std::array<at::Tensor, 3> conv2d_backward(const at::Tensor& grad, const at::Tensor& x,
                                                 const at::Tensor& weight, const at::Tensor& bias,
                                                 const std::vector<int64_t>& g,
                                                 const std::array<bool, 3>& mask) {
  const at::ScalarType cdtype = grad.scalar_type();
  const int64_t bias_size = bias.defined() ? bias.size(0) : 0;
  const at::OptionalIntArrayRef bias_sizes =
      bias.defined() ? at::OptionalIntArrayRef(c10::IntArrayRef(&bias_size, 1)) : std::nullopt;
  auto [gx, gw, gb] = at::convolution_backward(
      grad, cast(x, cdtype), cast(weight, cdtype), bias_sizes, {g[0], g[1]}, {g[2], g[3]},
      {g[4], g[5]}, /*transposed=*/false, {0, 0}, g[6], mask);
  return {mask[0] ? cast(gx, x.scalar_type()) : at::Tensor(),
          mask[1] ? cast(gw, weight.scalar_type()) : at::Tensor(),
          mask[2] ? cast(gb, bias.scalar_type()) : at::Tensor()};
}

// With create_graph=True, backward's results must not be differentiated again: to these
// formulas the restored input is a constant, so a second derivative would silently miss its
// terms. As torch's @once_differentiable (the Python fallback uses it): the results get an
// error node that raises if a second backward reaches it.
inline variable_list once_differentiable(variable_list out) {
  if (!at::GradMode::is_enabled()) return out;
  for (auto& t : out) {
    if (t.defined()) {
      t = t.detach();
      t.set_requires_grad(true);
    }
  }
  return torch::autograd::DelayedError(
      "tssd_fast: trying to differentiate twice a spike-input layer's backward (memory='default' "
      "or 'min' keeps its input packed: first derivatives only; use memory='plain' for double "
      "backward)",
      static_cast<int64_t>(out.size()))(std::move(out));
}

}  // namespace spike_autograd
}  // namespace tssd_fast
