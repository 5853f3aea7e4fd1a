// The spike-input layers' ops (tssd_fast/models/spike_layers.py, docs/MEMORY.md): schema, and
// the autograd formulas of the packed convolution and linear layer. Part of tssd_fast._C; the
// pack / unpack kernels register themselves per device (csrc/cpu/spike_pack_cpu.cpp,
// csrc/cuda/lif_cuda.cpp); the lean average pool is in csrc/lean_pool_op.cpp.
//
//   pack_spikes(x, bits, divisor) -> [bits, ceil(n / 8)] uint8    (csrc/spike_pack_host.h)
//   unpack_spikes(packed, size, stride, dtype, bits, divisor) -> x
//   spike_conv2d(x, weight, bias?, stride, padding, dilation, groups, bits, divisor,
//                repeat_base?, repeat_T) -> F.conv2d
//   spike_linear(x [N, in], weight, bias?, bits, divisor) -> F.linear
//
// spike_conv2d is F.conv2d whose backward keeps x packed to `bits` bits per value instead of x
// itself (or, with repeat_T > 0, a direct-encoded x = repeat_base [B, ...] at every one of
// repeat_T steps: the batch once), and computes the gradients with the ATen call autograd's own
// formula makes (convolution_backward, on the unpacked input), so they are bit for bit
// nn.Conv2d's. spike_linear: the same for F.linear on a 2-D input, with the matrix products of
// autograd's addmm / mm formulas. In C++ because the same formulas as Python autograd.Functions
// cost 60-110 us of host time per layer call on top of the layer
// (benchmarks/results/cpu_2026-12-07_spike_ops.md).
#include <ATen/core/LegacyTypeDispatch.h>  // AutoDispatchBelowADInplaceOrView
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/linear.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "spike_autograd.h"

namespace tssd_fast {
namespace {

using namespace spike_autograd;

class SpikeConvFunction : public torch::autograd::Function<SpikeConvFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                            c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                            int64_t bits, int64_t divisor,
                            const std::optional<at::Tensor>& repeat_base, int64_t repeat_T) {
    // autocast (when on) casts here as in F.conv2d: its dispatch key is still set
    at::Tensor out = at::conv2d(x, weight, bias, stride, padding, dilation, groups);
    ctx->save_for_backward({keep_input(ctx, x, bits, divisor, repeat_base, repeat_T), weight,
                            value_or_undefined(bias)});
    ctx->saved_data["geometry"] = conv_geometry(stride, padding, dilation, groups, "spike_conv2d");
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const bool create_graph = at::GradMode::is_enabled();
    const at::AutoGradMode no_grad(false);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &weight = saved[1], &bias = saved[2];
    auto [gx, gw, gb] = conv2d_backward(
        grads[0], restore_kept(ctx, saved[0]), weight, bias,
        ctx->saved_data["geometry"].toIntVector(),
        {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
         bias.defined() && ctx->needs_input_grad(2)});
    variable_list out(11);
    out[0] = gx, out[1] = gw, out[2] = gb;
    const at::AutoGradMode restore(create_graph);
    return once_differentiable(std::move(out));
  }
};

class SpikeLinearFunction : public torch::autograd::Function<SpikeLinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, int64_t bits, int64_t divisor) {
    at::Tensor out = at::linear(x, weight, bias);  // autocast (when on) casts here
    ctx->save_for_backward({keep_input(ctx, x, bits, divisor, std::nullopt, 0), weight,
                            value_or_undefined(bias)});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const bool create_graph = at::GradMode::is_enabled();
    const at::AutoGradMode no_grad(false);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &planes = saved[0], &weight = saved[1], &bias = saved[2];
    const at::Tensor& grad = grads[0];
    const at::ScalarType x_dtype = kept_dtype(ctx);
    const at::ScalarType cdtype = grad.scalar_type();
    variable_list out(5);
    if (ctx->needs_input_grad(0)) out[0] = cast(grad.mm(cast(weight, cdtype)), x_dtype);
    if (ctx->needs_input_grad(1)) {
      out[1] = cast(grad.t().mm(cast(restore_kept(ctx, planes), cdtype)),
                    weight.scalar_type());
    }
    if (bias.defined() && ctx->needs_input_grad(2)) {
      out[2] = cast(grad.sum(0), bias.scalar_type());
    }
    const at::AutoGradMode restore(create_graph);
    return once_differentiable(std::move(out));
  }
};

at::Tensor spike_linear_autograd(const at::Tensor& x, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, int64_t bits,
                                 int64_t divisor) {
  TORCH_CHECK(x.dim() == 2, "tssd_fast: spike_linear takes a 2-D input, got ", x.dim(), "-D");
  if (!records_grad({x, weight, value_or_undefined(bias)})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return at::linear(x, weight, bias);
  }
  return SpikeLinearFunction::apply(x, weight, bias, bits, divisor);
}

at::Tensor spike_linear_plain(const at::Tensor& x, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, int64_t, int64_t) {
  return at::linear(x, weight, bias);
}

at::Tensor spike_conv2d_autograd(const at::Tensor& x, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                                 c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                 int64_t groups, int64_t bits, int64_t divisor,
                                 const std::optional<at::Tensor>& repeat_base, int64_t repeat_T) {
  conv_geometry(stride, padding, dilation, groups, "spike_conv2d");  // (checks the lengths)
  check_repeat(x, repeat_base, repeat_T, "spike_conv2d");
  if (!records_grad({x, weight, value_or_undefined(bias)})) {
    at::AutoDispatchBelowADInplaceOrView guard;  // nothing to keep: the convolution alone
    return at::conv2d(x, weight, bias, stride, padding, dilation, groups);
  }
  return SpikeConvFunction::apply(x, weight, bias, stride, padding, dilation, groups, bits,
                                  divisor, repeat_base, repeat_T);
}

// Below autograd (inference mode, meta / fake tensors): the convolution, nothing kept.
at::Tensor spike_conv2d_plain(const at::Tensor& x, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                              c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                              int64_t, int64_t, const std::optional<at::Tensor>&, int64_t) {
  return at::conv2d(x, weight, bias, stride, padding, dilation, groups);
}

}  // namespace

using SpikeConvSig = at::Tensor(const at::Tensor&, const at::Tensor&,
                                const std::optional<at::Tensor>&, c10::IntArrayRef,
                                c10::IntArrayRef, c10::IntArrayRef, int64_t, int64_t, int64_t,
                                const std::optional<at::Tensor>&, int64_t);

at::Tensor spike_conv2d_call(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                             c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                             int64_t bits, int64_t divisor,
                             const std::optional<at::Tensor>& repeat_base, int64_t repeat_T) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tssd_fast::spike_conv2d", "")
                             .typed<SpikeConvSig>();
  return op.call(x, weight, bias, stride, padding, dilation, groups, bits, divisor, repeat_base,
                 repeat_T);
}

at::Tensor spike_linear_call(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, int64_t bits,
                             int64_t divisor) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("tssd_fast::spike_linear", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&, int64_t, int64_t)>();
  return op.call(x, weight, bias, bits, divisor);
}

}  // namespace tssd_fast

TORCH_LIBRARY_FRAGMENT(tssd_fast, m) {
  // no autograd: they run inside the layers' autograd formulas
  m.def("pack_spikes(Tensor x, int bits, int divisor) -> Tensor");
  m.def("unpack_spikes(Tensor packed, int[] size, int[] stride, ScalarType dtype, int bits, "
        "int divisor) -> Tensor");
  m.def("spike_conv2d(Tensor x, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
        "int[] dilation, int groups, int bits, int divisor, Tensor? repeat_base=None, "
        "int repeat_T=0) -> Tensor");
  m.def("spike_linear(Tensor x, Tensor weight, Tensor? bias, int bits, int divisor) -> Tensor");
}

TORCH_LIBRARY_IMPL(tssd_fast, Autograd, m) {
  m.impl("spike_conv2d", &tssd_fast::spike_conv2d_autograd);
  m.impl("spike_linear", &tssd_fast::spike_linear_autograd);
}

TORCH_LIBRARY_IMPL(tssd_fast, CompositeExplicitAutograd, m) {
  m.impl("spike_conv2d", &tssd_fast::spike_conv2d_plain);
  m.impl("spike_linear", &tssd_fast::spike_linear_plain);
}
