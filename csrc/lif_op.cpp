// The fused multi-step LIF op: schema, autograd formula and registration (module tssd_fast._C,
// with the CPU kernel of csrc/cpu/lif_cpu.cpp; the CUDA kernel registers itself from
// tssd_fast._C_cuda). The spike-input layers' ops are in csrc/spike_ops.cpp, csrc/conv_bn_op.cpp
// and csrc/lean_pool_op.cpp. The fake implementation, for torch.compile, is in
// tssd_fast/ops/lif_op.py.
//
//   lif_forward(x [T, *], v0 [*]?, v_init, tau, v_threshold, v_reset, alpha, flags)
//       -> (spikes [T, *], v_last [*], v_seq [T, *] or [0], saved)
//   lif_backward(grad_s, grad_v_seq?, grad_v_last?, saved, tau, v_threshold, v_reset, alpha,
//                flags, order) -> (grad_x [T, *], grad_v0 [*] with kFlagGradV0, else [0])
//
// v0 absent means every neuron starts from the scalar v_init (no tensor is made for it).
// `flags` packs the booleans and the surrogate id (csrc/lif_host.h, tssd_fast/ops/config.py).
// `saved` is H [T, N] (compute dtype), the Rect window bits [ceil(T/8), N] uint8, or an empty
// tensor when forward ran without kFlagSave. The autograd formula below sets kFlagSave itself
// when a gradient is needed, and runs in C++: no Python runs between a user's call and the kernel.
// Narrow headers on purpose: <torch/extension.h> (all of torch's C++ API) doubles the compile
// time of this file, the longest of the CPU build.
#include <ATen/core/LegacyTypeDispatch.h>  // AutoDispatchBelowADInplaceOrView
#include <ATen/core/List.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include "lif_host.h"

namespace tssd_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using Fwd4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

const c10::TypedOperatorHandle<Fwd4(const at::Tensor&, const std::optional<at::Tensor>&, double,
                                     double, double, double, double, int64_t)>&
forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tssd_fast::lif_forward", "")
                             .typed<Fwd4(const at::Tensor&, const std::optional<at::Tensor>&,
                                         double, double, double, double, double, int64_t)>();
  return op;
}

const c10::TypedOperatorHandle<std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    const at::Tensor&, double, double, double, double, int64_t, c10::IntArrayRef)>&
backward_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("tssd_fast::lif_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(
              const at::Tensor&, const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, const at::Tensor&, double, double, double, double,
              int64_t, c10::IntArrayRef)>();
  return op;
}

class LIFFunction : public torch::autograd::Function<LIFFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x,
                               const std::optional<at::Tensor>& v0, double v_init, double tau,
                               double v_threshold, double v_reset, double alpha,
                               int64_t flags) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [spikes, v_last, v_seq, saved] =
        forward_op().call(x, v0, v_init, tau, v_threshold, v_reset, alpha, flags | kFlagSave);
    ctx->save_for_backward({saved});
    ctx->saved_data["s"] = c10::List<double>({tau, v_threshold, v_reset, alpha});
    ctx->saved_data["flags"] = flags;
    ctx->saved_data["order"] = memory_order(x);
    ctx->saved_data["shape"] = x.sym_sizes();  // for a zero grad_s when only V is used
    ctx->saved_data["dtype"] = x.scalar_type();
    ctx->saved_data["has_v0"] = v0.has_value() && v0->defined();
    ctx->mark_non_differentiable({saved});
    ctx->set_materialize_grads(false);
    return {spikes, v_last, v_seq, saved};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor saved = ctx->get_saved_variables()[0];
    const auto s = ctx->saved_data["s"].toDoubleList();
    const int64_t flags = ctx->saved_data["flags"].toInt();
    const std::vector<int64_t> order = ctx->saved_data["order"].toIntVector();
    at::Tensor grad_s = grads[0], grad_v_last = grads[1], grad_v_seq = grads[2];
    if (!grad_s.defined()) {  // only v_last / v_seq were used downstream
      const at::Tensor& like = grad_v_last.defined() ? grad_v_last : grad_v_seq;
      if (!like.defined()) return variable_list(8);
      grad_s = like.new_zeros_symint(ctx->saved_data["shape"].toSymIntVector(),
                                     like.options().dtype(ctx->saved_data["dtype"].toScalarType()));
    }
    // grad_v0 only for a v0 tensor that needs it (none for a scalar v_init): N writes fewer.
    const bool gv0 = ctx->saved_data["has_v0"].toBool() && ctx->needs_input_grad(1);
    auto [grad_x, grad_v0] =
        backward_op().call(grad_s, grad_v_seq, grad_v_last, saved, s[0], s[1], s[2], s[3],
                           gv0 ? flags | kFlagGradV0 : flags, order);
    variable_list out(8);
    out[0] = grad_x;
    if (gv0) out[1] = grad_v0;
    return out;
  }
};

// The Autograd-key kernel: builds the graph only when a gradient can flow, else goes straight
// to the device kernel.
Fwd4 lif_forward_autograd(const at::Tensor& x, const std::optional<at::Tensor>& v0, double v_init,
                          double tau, double v_threshold, double v_reset, double alpha,
                          int64_t flags) {
  const bool v0_grad = v0.has_value() && v0->defined() && v0->requires_grad();
  if (!(at::GradMode::is_enabled() && (x.requires_grad() || v0_grad))) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return forward_op().call(x, v0, v_init, tau, v_threshold, v_reset, alpha, flags);
  }
  auto outs = LIFFunction::apply(x, v0, v_init, tau, v_threshold, v_reset, alpha, flags);
  return {outs[0], outs[1], outs[2], outs[3]};
}

}  // namespace

// csrc/spike_ops.cpp, csrc/conv_bn_op.cpp, csrc/lean_pool_op.cpp: the spike-input layers' ops
// through the dispatcher (bound below)
at::Tensor spike_conv2d_call(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                             c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                             int64_t bits, int64_t divisor,
                             const std::optional<at::Tensor>& repeat_base, int64_t repeat_T);
at::Tensor spike_linear_call(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, int64_t bits,
                             int64_t divisor);
at::Tensor conv_bn_recompute_call(
    const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
    const std::optional<at::Tensor>& bn_weight, const std::optional<at::Tensor>& bn_bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    bool training, double momentum, double eps, bool cudnn_enabled, int64_t bits,
    int64_t divisor, const std::optional<at::Tensor>& repeat_base, int64_t repeat_T);
void set_pool_backward(int64_t mode);
at::Tensor lean_avg_pool2d_call(const at::Tensor& x, c10::IntArrayRef kernel,
                                c10::IntArrayRef stride, c10::IntArrayRef padding,
                                bool ceil_mode, bool count_include_pad,
                                std::optional<int64_t> divisor);

}  // namespace tssd_fast

TORCH_LIBRARY(tssd_fast, m) {
  // The Python module holding the fake implementations (torch.compile / FakeTensor).
  m.set_python_module("tssd_fast.ops.lif_op");
  m.def("lif_forward(Tensor x, Tensor? v0, float v_init, float tau, float v_threshold, "
        "float v_reset, float alpha, int flags) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("lif_backward(Tensor grad_s, Tensor? grad_v_seq, Tensor? grad_v_last, Tensor saved, "
        "float tau, float v_threshold, float v_reset, float alpha, int flags, int[] order) "
        "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tssd_fast, Autograd, m) {
  m.impl("lif_forward", &tssd_fast::lif_forward_autograd);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "tssd_fast: the fused LIF op (schema, autograd) and its CPU kernel";
  m.def("set_poison", [](bool on) { tssd_fast::poison_flag() = on; },
        "tests: fill every fresh op output with NaN / 0xA5");
  // The same op through the dispatcher from C++: the eager fast path of LIFNode. pybind11's
  // argument conversion costs ~1 us less than torch.ops' boxed call on small inputs; the
  // dispatcher (autograd, device kernels, dispatch modes) still decides everything.
  // torch.compile traces torch.ops.tssd_fast.lif_forward instead (it cannot see into this).
  m.def("lif_forward",
        [](const at::Tensor& x, const std::optional<at::Tensor>& v0, double v_init, double tau,
           double v_threshold, double v_reset, double alpha, int64_t flags) {
          return tssd_fast::forward_op().call(x, v0, v_init, tau, v_threshold, v_reset, alpha,
                                              flags);
        },
        "tssd_fast::lif_forward called from C++ (see csrc/lif_op.cpp)");
  m.def("spike_conv2d", &tssd_fast::spike_conv2d_call,
        "tssd_fast::spike_conv2d called from C++ (see csrc/spike_ops.cpp): the spike-input "
        "convolution's eager path, ~7 us less than torch.ops' boxed call");
  m.def("spike_linear", &tssd_fast::spike_linear_call,
        "tssd_fast::spike_linear called from C++ (see csrc/spike_ops.cpp)");
  m.def("conv_bn_recompute", &tssd_fast::conv_bn_recompute_call,
        "tssd_fast::conv_bn_recompute called from C++ (see csrc/conv_bn_op.cpp)");
  m.def("set_pool_backward", &tssd_fast::set_pool_backward,
        "tests: lean_avg_pool2d's backward for non-overlapping windows: 0 = the broadcast on "
        "CUDA only (default), 1 = the broadcast everywhere, 2 = ATen's avg_pool2d_backward");
  m.def("lean_avg_pool2d", &tssd_fast::lean_avg_pool2d_call,
        "tssd_fast::lean_avg_pool2d called from C++ (see csrc/lean_pool_op.cpp)");
}
