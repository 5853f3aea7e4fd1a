// lean_avg_pool2d: F.avg_pool2d that keeps only x's shape, strides, dtype and device for
// backward (its gradient never reads x's values; autograd's own formula keeps x). Schema,
// autograd formula and registration; part of tssd_fast._C (docs/MEMORY.md). The CPU kernels of
// the spiking networks' pools (NCHW, non-overlapping windows) are csrc/cpu/avg_pool_cpu.cpp's.
//
//   lean_avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor?)
#include <ATen/core/LegacyTypeDispatch.h>  // AutoDispatchBelowADInplaceOrView
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/avg_pool2d.h>
#include <ATen/ops/avg_pool2d_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/zeros.h>
#include <c10/core/MemoryFormat.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "cpu/avg_pool_cpu.h"
#include "spike_pack_host.h"  // contiguous_strides

namespace tssd_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// avg_pool2d: on the CPU, for NCHW input and non-overlapping windows, the kernel of
// csrc/cpu/avg_pool_cpu.cpp (ATen's NCHW kernel is 6x slower than its channels_last one there);
// ATen's everywhere else. The same numbers either way.
at::Tensor pool_forward(const at::Tensor& x, c10::IntArrayRef kernel, c10::IntArrayRef stride,
                        c10::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                        std::optional<int64_t> divisor) {
  if ((!divisor.has_value() || *divisor > 0) && plain_cpu_tensor(x) &&
      avg_pool2d_windows_apply(x.device(), x.sizes(), x.strides(), kernel, stride, padding,
                               ceil_mode)) {
    return avg_pool2d_windows_cpu(x, kernel[0], kernel[1],
                                  divisor.has_value() ? *divisor : kernel[0] * kernel[1]);
  }
  return at::avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor);
}

// Which backward lean_avg_pool2d takes for non-overlapping windows: the broadcast on CUDA only
// (auto), always, or never (ATen's avg_pool2d_backward). Tests set it (set_pool_backward).
enum PoolBackwardMode : int { kPoolAuto = 0, kPoolBroadcast = 1, kPoolAten = 2 };
int& pool_backward_mode() {
  static int mode = kPoolAuto;
  return mode;
}

class LeanAvgPoolFunction : public torch::autograd::Function<LeanAvgPoolFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, c10::IntArrayRef kernel,
                            c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                            bool count_include_pad, std::optional<int64_t> divisor) {
    ctx->saved_data["size"] = x.sizes();
    ctx->saved_data["strides"] = x.strides();
    ctx->saved_data["dtype"] = x.scalar_type();
    ctx->saved_data["device"] = x.device();
    ctx->saved_data["args"] = std::vector<int64_t>{kernel[0], kernel[1], stride[0], stride[1],
                                                   padding[0], padding[1], ceil_mode,
                                                   count_include_pad};
    ctx->saved_data["divisor"] = divisor;
    return pool_forward(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto a = ctx->saved_data["args"].toIntVector();
    const auto d = ctx->saved_data["divisor"].toOptional<int64_t>();
    const auto size = ctx->saved_data["size"].toIntVector();
    const auto strides = ctx->saved_data["strides"].toIntVector();
    const auto options = at::TensorOptions()
                             .dtype(ctx->saved_data["dtype"].toScalarType())
                             .device(ctx->saved_data["device"].toDevice());
    variable_list out(7);
    const int64_t divide = d.has_value() ? *d : a[0] * a[1];
    if (divide > 0 && plain_cpu_tensor(grads[0]) &&
        avg_pool2d_windows_apply(options.device(), size, strides, {a[0], a[1]}, {a[2], a[3]},
                                 {a[4], a[5]}, a[6] != 0)) {
      // csrc/cpu/avg_pool_cpu.cpp: ATen's numbers, 1.5-5x faster than its NCHW backward there
      out[0] = avg_pool2d_windows_backward_cpu(grads[0], size, a[0], a[1], divide);
      return out;
    }
    const int mode = pool_backward_mode();
    const bool wanted = mode == kPoolBroadcast ||
                        (mode == kPoolAuto && options.device().type() == c10::DeviceType::CUDA);
    if (wanted && a[0] == a[2] && a[1] == a[3] && a[4] == 0 && a[5] == 0 && divide > 0 &&
        (divide & (divide - 1)) == 0 && (!a[6] || (size[2] % a[0] == 0 && size[3] % a[1] == 0))) {
      out[0] = pool_backward_by_broadcast(grads[0], size, strides, a[0], a[1], divide, options);
      return out;
    }
    // shape and layout only: avg_pool2d_backward does not read the input's values
    const at::Tensor like = at::empty_strided(size, strides, options);
    out[0] = at::avg_pool2d_backward(grads[0], like, {a[0], a[1]}, {a[2], a[3]}, {a[4], a[5]},
                                     a[6] != 0, a[7] != 0, d);
    return out;
  }

  // Windows that do not overlap (kernel == stride, no padding) and a power-of-two divisor: each
  // input element lies in at most one window, so its gradient is that window's times 1/divisor
  // (exact), and 0 past the last window. ATen's avg_pool2d_backward computes the same numbers
  // with a search over the windows per input element: on an H200 it ran at 7% of the copy
  // bandwidth (0.55 ms of a 7.6 ms VGG-9 step for 4 calls; gpu_2026-11-28_c1d6259). This is one
  // elementwise kernel writing the input's size, in the layout torch's backward would choose.
  // Used on CUDA only (kPoolAuto): on the CPU ATen's kernel measured faster (47 vs 67 ms at
  // [128, 128, 32, 32]); on the GPU it is a prediction until a GPU run times it.
  static at::Tensor pool_backward_by_broadcast(const at::Tensor& grad,
                                               const std::vector<int64_t>& size,
                                               const std::vector<int64_t>& strides, int64_t kh,
                                               int64_t kw, int64_t divide,
                                               const at::TensorOptions& options) {
    const int64_t N = size[0], C = size[1], H = size[2], W = size[3];
    const int64_t Ho = grad.size(2), Wo = grad.size(3);
    const bool cl = strides == c10::get_channels_last_strides_2d(size) &&
                    strides != contiguous_strides(size);
    const bool partial = Ho * kh != H || Wo * kw != W;
    const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    at::Tensor gin = partial ? at::zeros(size, options.memory_format(fmt))
                             : at::empty(size, options.memory_format(fmt));
    const auto s = gin.strides();
    // gin's covered part as [N, C, Ho, kh, Wo, kw]: a view with gin's own strides
    at::Tensor windows = gin.as_strided({N, C, Ho, kh, Wo, kw},
                                        {s[0], s[1], kh * s[2], s[2], kw * s[3], s[3]});
    at::mul_out(windows, grad.unsqueeze(3).unsqueeze(5).expand({N, C, Ho, kh, Wo, kw}),
                at::Scalar(1.0 / static_cast<double>(divide)));
    return gin;
  }
};

at::Tensor lean_avg_pool2d(const at::Tensor& x, c10::IntArrayRef kernel, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                           std::optional<int64_t> divisor) {
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2,
              "tssd_fast: lean_avg_pool2d takes 2 kernel sizes, strides and paddings");
  if (!(at::GradMode::is_enabled() && x.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return pool_forward(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor);
  }
  return LeanAvgPoolFunction::apply(x, kernel, stride, padding, ceil_mode, count_include_pad,
                                    divisor);
}

at::Tensor lean_avg_pool2d_plain(const at::Tensor& x, c10::IntArrayRef kernel,
                                 c10::IntArrayRef stride, c10::IntArrayRef padding,
                                 bool ceil_mode, bool count_include_pad,
                                 std::optional<int64_t> divisor) {
  return pool_forward(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor);
}

}  // namespace

void set_pool_backward(int64_t mode) {
  TORCH_CHECK(mode >= kPoolAuto && mode <= kPoolAten, "tssd_fast: pool backward mode ", mode);
  pool_backward_mode() = static_cast<int>(mode);
}

using LeanPoolSig = at::Tensor(const at::Tensor&, c10::IntArrayRef, c10::IntArrayRef,
                               c10::IntArrayRef, bool, bool, std::optional<int64_t>);

at::Tensor lean_avg_pool2d_call(const at::Tensor& x, c10::IntArrayRef kernel,
                                c10::IntArrayRef stride, c10::IntArrayRef padding,
                                bool ceil_mode, bool count_include_pad,
                                std::optional<int64_t> divisor) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tssd_fast::lean_avg_pool2d", "")
                             .typed<LeanPoolSig>();
  return op.call(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor);
}

}  // namespace tssd_fast

TORCH_LIBRARY_FRAGMENT(tssd_fast, m) {
  m.def("lean_avg_pool2d(Tensor x, int[] kernel, int[] stride, int[] padding, bool ceil_mode, "
        "bool count_include_pad, int? divisor_override) -> Tensor");
}

TORCH_LIBRARY_IMPL(tssd_fast, Autograd, m) {
  m.impl("lean_avg_pool2d", &tssd_fast::lean_avg_pool2d);
}

TORCH_LIBRARY_IMPL(tssd_fast, CompositeExplicitAutograd, m) {
  m.impl("lean_avg_pool2d", &tssd_fast::lean_avg_pool2d_plain);
}
