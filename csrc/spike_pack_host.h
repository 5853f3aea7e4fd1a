// Host side of the spike packing ops (schema in csrc/lif_op.cpp), shared by the CPU and CUDA
// registrations: checks, the memory order, output allocation. A device file supplies the two
// launchers over flat memory (bit layout: csrc/spike_pack.h).
//
//   pack_spikes(x, bits, divisor) -> [bits, ceil(n / 8)] uint8
//   unpack_spikes(packed, size, stride, dtype, bits, divisor) -> tensor of size / stride / dtype
//
// Memory order, as tssd_fast.models.spike_layers._memory_order: a contiguous or a 4-D
// channels_last x is read as it lies (the caller restores it with x's own strides); any other
// layout is read as a contiguous copy. One allocation and one launch per call: on a GPU these
// two ops replace five elementwise kernels and their views per spike-input layer.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "lif_host.h"  // EmptyFn, fresh, check_device
#include "spike_pack.h"

namespace tssd_fast {

struct PackArgs {
  const void* x;         // n elements in memory order, x's dtype
  at::ScalarType dtype;  // x's
  uint8_t* planes;       // [bits, M]
  int64_t n, M;
  int bits;
  float divisor;
};

struct UnpackArgs {
  const uint8_t* planes;  // [bits, M]
  void* y;                // n elements in memory order, dtype
  at::ScalarType dtype;
  int64_t n, M;
  int bits;
  float inv_divisor;
};

using PackLauncher = void (*)(const PackArgs&, const at::Tensor& like);
using UnpackLauncher = void (*)(const UnpackArgs&, const at::Tensor& like);

inline void check_code(int64_t bits, int64_t divisor) {
  TORCH_CHECK(bits >= 1 && bits <= kMaxSpikeBits, "tssd_fast: bits must be in 1..",
              kMaxSpikeBits, ", got ", bits);
  TORCH_CHECK(divisor >= 1 && (divisor & (divisor - 1)) == 0 && divisor <= (int64_t{1} << 24),
              "tssd_fast: divisor must be a power of two, got ", divisor);
}

// torch's strides of a contiguous tensor of `sizes` (a size 0 or 1 counts as 1).
inline std::vector<int64_t> contiguous_strides(c10::IntArrayRef sizes) {
  std::vector<int64_t> out(sizes.size());
  int64_t step = 1;
  for (int64_t i = static_cast<int64_t>(sizes.size()) - 1; i >= 0; --i) {
    out[i] = step;
    step *= std::max<int64_t>(sizes[i], 1);
  }
  return out;
}

inline bool read_as_it_lies(const at::Tensor& x) {
  return x.is_contiguous() ||
         (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast));
}

template <c10::DeviceType D, PackLauncher launch, EmptyFn empty>
at::Tensor pack_spikes_on(const at::Tensor& x_in, int64_t bits, int64_t divisor) {
  check_device<D>(x_in, "x");
  check_code(bits, divisor);
  TORCH_CHECK(x_in.is_floating_point(), "tssd_fast: pack_spikes needs a floating-point x, got ",
              x_in.scalar_type());
  const at::Tensor x = read_as_it_lies(x_in) ? x_in : x_in.contiguous();
  const int64_t n = x.numel(), M = (n + 7) / 8;
  at::Tensor planes = fresh(empty, x, {bits, M}, at::kByte);
  if (M > 0) {
    launch({x.data_ptr(), x.scalar_type(), planes.data_ptr<uint8_t>(), n, M,
            static_cast<int>(bits), static_cast<float>(divisor)},
           x);
  }
  return planes;
}

template <c10::DeviceType D, UnpackLauncher launch, EmptyFn empty>
at::Tensor unpack_spikes_on(const at::Tensor& planes, c10::IntArrayRef size,
                            c10::IntArrayRef stride, at::ScalarType dtype, int64_t bits,
                            int64_t divisor) {
  check_device<D>(planes, "packed");
  check_code(bits, divisor);
  TORCH_CHECK(at::isFloatingType(dtype), "tssd_fast: unpack_spikes needs a floating dtype, got ",
              dtype);
  TORCH_CHECK(size.size() == stride.size(), "tssd_fast: unpack_spikes: ", size.size(),
              " sizes but ", stride.size(), " strides");
  int64_t n = 1;
  for (const int64_t s : size) n *= s;
  const int64_t M = (n + 7) / 8;
  TORCH_CHECK(planes.scalar_type() == at::kByte && planes.dim() == 2 && planes.size(0) == bits &&
                  planes.size(1) == M && planes.is_contiguous(),
              "tssd_fast: unpack_spikes needs contiguous uint8 planes [", bits, ", ", M,
              "] for ", n, " elements, got ", planes.scalar_type(), " ",
              shape_str(planes.sizes()));
  at::Tensor flat = fresh(empty, planes, {n}, dtype);
  // the strides must describe a dense layout, so that storage offset o is element o of the
  // memory order the planes were packed in
  at::Tensor y = flat.as_strided(size, stride);
  TORCH_CHECK(y.is_non_overlapping_and_dense(), "tssd_fast: unpack_spikes: strides ",
              shape_str(stride), " are not a dense layout of size ", shape_str(size));
  if (M > 0) {
    launch({planes.data_ptr<uint8_t>(), flat.data_ptr(), dtype, n, M, static_cast<int>(bits),
            1.0f / static_cast<float>(divisor)},
           planes);
  }
  return y;
}

}  // namespace tssd_fast
