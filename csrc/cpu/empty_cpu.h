// The CPU allocator the kernels' host code takes (EmptyFn, csrc/lif_host.h): straight to
// at::detail::empty_cpu, without a dispatcher round trip.
#pragma once

#include <ATen/EmptyTensor.h>
#include <ATen/core/Tensor.h>

#include <optional>

namespace tssd_fast {

inline at::Tensor empty_cpu(c10::IntArrayRef sizes, at::ScalarType dtype, const at::Tensor&) {
  return at::Tensor(at::detail::empty_cpu(sizes, dtype, /*pin_memory=*/false, std::nullopt));
}

}  // namespace tssd_fast
