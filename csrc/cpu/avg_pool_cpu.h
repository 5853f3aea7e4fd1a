// CPU forward and backward of lean_avg_pool2d for non-overlapping windows on NCHW input
// (csrc/cpu/avg_pool_cpu.cpp); csrc/lean_pool_op.cpp calls them, and ATen's kernels otherwise.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/util/ArrayRef.h>

namespace tssd_fast {

// A plain dense CPU tensor: no fake, functional, batched or negated-view wrapper around it,
// whose data the kernels below could not read as they are.
inline bool plain_cpu_tensor(const at::Tensor& t) {
  return (t.key_set() - c10::autograd_dispatch_keyset_with_ADInplaceOrView -
          c10::autocast_dispatch_keyset)
             .highestPriorityTypeId() == c10::DispatchKey::CPU;
}

// Whether avg_pool2d_windows_cpu computes avg_pool2d(x, kernel, stride, padding, ceil_mode, ...)
// for an x of this device, size and strides (and avg_pool2d_windows_backward_cpu its backward):
// a CPU, NCHW, non-empty 4-D x, kernel == stride, no padding, every window whole (any
// count_include_pad: without padding it changes nothing).
bool avg_pool2d_windows_apply(c10::Device device, c10::IntArrayRef size,
                              c10::IntArrayRef strides, c10::IntArrayRef kernel,
                              c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode);

// avg_pool2d's result, bit for bit, with windows kh x kw and the divisor `divide` (kh * kw or
// divisor_override).
at::Tensor avg_pool2d_windows_cpu(const at::Tensor& x, int64_t kh, int64_t kw, int64_t divide);

// avg_pool2d_backward's result, bit for bit, for an input of `size` (NCHW-contiguous) for which
// avg_pool2d_windows_apply held: the gradient [N, C, Ho, Wo] in, the input's gradient out.
at::Tensor avg_pool2d_windows_backward_cpu(const at::Tensor& grad, c10::IntArrayRef size,
                                           int64_t kh, int64_t kw, int64_t divide);

}  // namespace tssd_fast
