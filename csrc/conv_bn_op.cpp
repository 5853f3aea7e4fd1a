// conv_bn_recompute: F.conv2d followed by F.batch_norm (ConvBN in memory='min',
// tssd_fast/models/spike_layers.py, docs/MEMORY.md) whose backward keeps neither the BatchNorm
// input (the conv output) nor, for spikes, the dense conv input. Schema, autograd formula and
// registration; part of tssd_fast._C.
//
//   conv_bn_recompute(x, weight, bias?, stride, padding, dilation, groups,
//                     bn_weight?, bn_bias?, running_mean?, running_var?, training, momentum, eps,
//                     cudnn_enabled, bits, divisor, repeat_base?, repeat_T) -> bn(conv(x))
//
// The BatchNorm arguments are F.batch_norm's as nn.BatchNorm2d.forward computes them (the caller
// does, and counts the step); running_mean / running_var are updated in place in training mode.
// Forward runs the ATen calls F.conv2d and F.batch_norm make (_batch_norm_impl_index: native or
// cuDNN, as torch picks) and keeps x (packed to `bits` bits, or a direct-encoded batch once, or
// as it is: csrc/spike_autograd.h) and BatchNorm's per-channel statistics. Backward recomputes
// only the convolution, in the forward's compute dtype with autocast off, then calls the
// gradient formulas autograd's own nodes call (_batch_norm_impl_index_backward,
// convolution_backward): losses and gradients are bit for bit those of the plain layers, with
// one more convolution per step. In C++ because the same formula as a Python autograd.Function
// (the fallback without the compiled extension) costs ~100 us more host time per layer call.
#include <ATen/core/LegacyTypeDispatch.h>  // AutoDispatchBelowADInplaceOrView
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/_batch_norm_impl_index.h>
#include <ATen/ops/_batch_norm_impl_index_backward.h>
#include <ATen/ops/batch_norm.h>
#include <ATen/ops/conv2d.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "spike_autograd.h"

namespace tssd_fast {
namespace {

using namespace spike_autograd;
using OptTensor = std::optional<at::Tensor>;

// F.batch_norm's own check (_verify_batch_size), which ATen leaves to Python.
void check_batch_size(const at::Tensor& y, bool training) {
  if (!training) return;
  int64_t per_channel = y.size(0);
  for (int64_t d = 2; d < y.dim(); ++d) per_channel *= y.size(d);
  TORCH_CHECK_VALUE(per_channel != 1,
                    "Expected more than 1 value per channel when training, got input size ",
                    y.sizes());
}

class ConvBNRecomputeFunction : public torch::autograd::Function<ConvBNRecomputeFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const OptTensor& bias, c10::IntArrayRef stride,
                            c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                            const OptTensor& bn_weight, const OptTensor& bn_bias,
                            const OptTensor& running_mean, const OptTensor& running_var,
                            bool training, double momentum, double eps, bool cudnn_enabled,
                            int64_t bits, int64_t divisor, const OptTensor& repeat_base,
                            int64_t repeat_T) {
    // autocast (when on) casts here as in F.conv2d; BatchNorm has no autocast policy
    const at::Tensor y = at::conv2d(x, weight, bias, stride, padding, dilation, groups);
    check_batch_size(y, training);
    auto [z, save_mean, save_invstd, reserve, impl] = at::_batch_norm_impl_index(
        y, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps, cudnn_enabled);
    // the running statistics themselves, as autograd's BatchNorm node saves them (eval mode
    // normalises with them; a later update in place reaches backward there too)
    ctx->save_for_backward({keep_input(ctx, x, bits, divisor, repeat_base, repeat_T), weight,
                            value_or_undefined(bias), value_or_undefined(bn_weight),
                            value_or_undefined(running_mean), value_or_undefined(running_var),
                            save_mean, save_invstd, reserve});
    ctx->saved_data["geometry"] =
        conv_geometry(stride, padding, dilation, groups, "conv_bn_recompute");
    ctx->saved_data["y_dtype"] = y.scalar_type();  // the convolution's compute dtype
    ctx->saved_data["bn"] =
        std::vector<int64_t>{impl, training, bn_bias.has_value() && bn_bias->defined()};
    ctx->saved_data["eps"] = eps;
    return z;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const bool create_graph = at::GradMode::is_enabled();
    const at::AutoGradMode no_grad(false);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &weight = saved[1], &bias = saved[2], &bn_weight = saved[3];
    const auto g = ctx->saved_data["geometry"].toIntVector();
    const auto bn = ctx->saved_data["bn"].toIntVector();
    const int64_t impl = bn[0];
    const bool training = bn[1] != 0;
    const at::Tensor x = restore_kept(ctx, saved[0]);
    at::Tensor y;
    {
      // the forward's convolution, in its compute dtype; autocast off: backward() may run inside
      // an autocast region whose casts the forward did not make
      const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
      const at::ScalarType cd = ctx->saved_data["y_dtype"].toScalarType();
      y = at::conv2d(cast(x, cd), cast(weight, cd), cast(bias, cd), {g[0], g[1]}, {g[2], g[3]},
                     {g[4], g[5]}, g[6]);
    }
    // needs_input_grad counts the tensor inputs present (x, weight, then bias, bn_weight,
    // bn_bias where given); backward's results are per forward argument
    int64_t edge = 2;
    const int64_t bias_edge = bias.defined() ? edge++ : -1;
    const int64_t bn_w_edge = bn_weight.defined() ? edge++ : -1;
    const int64_t bn_b_edge = bn[2] != 0 ? edge++ : -1;
    const auto needs = [&](int64_t e) { return e >= 0 && ctx->needs_input_grad(e); };
    const std::array<bool, 3> conv_mask = {needs(0), needs(1), needs(bias_edge)};
    const bool conv_grads = conv_mask[0] || conv_mask[1] || conv_mask[2];
    const std::array<bool, 3> bn_mask = {conv_grads, needs(bn_w_edge), needs(bn_b_edge)};
    at::Tensor grad = grads[0];
    if (impl == 1 && training) {
      // as autograd's cuDNN formula (cudnn_batch_norm_backward also converts it itself, which
      // is why the Python twin, without suggest_memory_format, leaves this out)
      grad = grad.contiguous(y.suggest_memory_format());
    }
    auto [gy, gbn_w, gbn_b] = at::_batch_norm_impl_index_backward(
        impl, y, grad, bn_weight, saved[4], saved[5], saved[6], saved[7], training,
        ctx->saved_data["eps"].toDouble(), bn_mask, saved[8]);
    variable_list out(19);
    if (conv_grads) {
      auto [gx, gw, gb] = conv2d_backward(gy, x, weight, bias, g, conv_mask);
      out[0] = gx, out[1] = gw, out[2] = gb;
    }
    if (bn_mask[1]) out[7] = gbn_w;
    if (bn_mask[2]) out[8] = gbn_b;
    const at::AutoGradMode restore(create_graph);
    return once_differentiable(std::move(out));
  }
};

// Below autograd (no gradient recorded, inference mode, meta / fake tensors): the two layers.
at::Tensor conv_bn_plain(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias,
                         c10::IntArrayRef stride, c10::IntArrayRef padding,
                         c10::IntArrayRef dilation, int64_t groups, const OptTensor& bn_weight,
                         const OptTensor& bn_bias, const OptTensor& running_mean,
                         const OptTensor& running_var, bool training, double momentum, double eps,
                         bool cudnn_enabled, int64_t, int64_t, const OptTensor&, int64_t) {
  const at::Tensor y = at::conv2d(x, weight, bias, stride, padding, dilation, groups);
  check_batch_size(y, training);
  return at::batch_norm(y, bn_weight, bn_bias, running_mean, running_var, training, momentum,
                        eps, cudnn_enabled);
}

at::Tensor conv_bn_autograd(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias,
                            c10::IntArrayRef stride, c10::IntArrayRef padding,
                            c10::IntArrayRef dilation, int64_t groups, const OptTensor& bn_weight,
                            const OptTensor& bn_bias, const OptTensor& running_mean,
                            const OptTensor& running_var, bool training, double momentum,
                            double eps, bool cudnn_enabled, int64_t bits, int64_t divisor,
                            const OptTensor& repeat_base, int64_t repeat_T) {
  conv_geometry(stride, padding, dilation, groups, "conv_bn_recompute");  // (checks the lengths)
  check_repeat(x, repeat_base, repeat_T, "conv_bn_recompute");
  if (!records_grad({x, weight, value_or_undefined(bias), value_or_undefined(bn_weight),
                     value_or_undefined(bn_bias)})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return conv_bn_plain(x, weight, bias, stride, padding, dilation, groups, bn_weight, bn_bias,
                         running_mean, running_var, training, momentum, eps, cudnn_enabled, bits,
                         divisor, repeat_base, repeat_T);
  }
  return ConvBNRecomputeFunction::apply(x, weight, bias, stride, padding, dilation, groups,
                                        bn_weight, bn_bias, running_mean, running_var, training,
                                        momentum, eps, cudnn_enabled, bits, divisor, repeat_base,
                                        repeat_T);
}

}  // namespace

using ConvBNSig = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&,
                             c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t,
                             const OptTensor&, const OptTensor&, const OptTensor&,
                             const OptTensor&, bool, double, double, bool, int64_t, int64_t,
                             const OptTensor&, int64_t);

// Through the dispatcher, for the pybind entry point (csrc/lif_op.cpp).
at::Tensor conv_bn_recompute_call(const at::Tensor& x, const at::Tensor& weight,
                                  const OptTensor& bias, c10::IntArrayRef stride,
                                  c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                  int64_t groups, const OptTensor& bn_weight,
                                  const OptTensor& bn_bias, const OptTensor& running_mean,
                                  const OptTensor& running_var, bool training, double momentum,
                                  double eps, bool cudnn_enabled, int64_t bits, int64_t divisor,
                                  const OptTensor& repeat_base, int64_t repeat_T) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tssd_fast::conv_bn_recompute", "")
                             .typed<ConvBNSig>();
  return op.call(x, weight, bias, stride, padding, dilation, groups, bn_weight, bn_bias,
                 running_mean, running_var, training, momentum, eps, cudnn_enabled, bits,
                 divisor, repeat_base, repeat_T);
}

}  // namespace tssd_fast

TORCH_LIBRARY_FRAGMENT(tssd_fast, m) {
  m.def("conv_bn_recompute(Tensor x, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
        "int[] dilation, int groups, Tensor? bn_weight, Tensor? bn_bias, "
        "Tensor(a!)? running_mean, Tensor(b!)? running_var, bool training, float momentum, "
        "float eps, bool cudnn_enabled, int bits, int divisor, Tensor? repeat_base=None, "
        "int repeat_T=0) -> Tensor");
}

TORCH_LIBRARY_IMPL(tssd_fast, Autograd, m) {
  m.impl("conv_bn_recompute", &tssd_fast::conv_bn_autograd);
}

TORCH_LIBRARY_IMPL(tssd_fast, CompositeExplicitAutograd, m) {
  m.impl("conv_bn_recompute", &tssd_fast::conv_bn_plain);
}
