// CPU kernels of tssd_fast::pack_spikes / unpack_spikes (schema: csrc/lif_op.cpp; host side:
// csrc/spike_pack_host.h; bit layout: csrc/spike_pack.h, shared with the CUDA kernel):
// parallel over output bytes in torch's intra-op thread pool.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../spike_pack_host.h"
#include "empty_cpu.h"

namespace tssd_fast {
namespace {

constexpr int64_t kBytesPerTask = 16384;

void launch_pack(const PackArgs& a, const at::Tensor&) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.dtype, "pack_spikes_cpu", [&] {
    const auto* x = static_cast<const scalar_t*>(a.x);
    at::parallel_for(0, a.M, kBytesPerTask, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) {
        pack_spike_byte(x, a.n, m, a.M, a.bits, a.divisor, a.planes);
      }
    });
  });
}

void launch_unpack(const UnpackArgs& a, const at::Tensor&) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.dtype, "unpack_spikes_cpu", [&] {
    auto* y = static_cast<scalar_t*>(a.y);
    at::parallel_for(0, a.M, kBytesPerTask, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) {
        unpack_spike_byte(a.planes, a.n, m, a.M, a.bits, a.inv_divisor, y);
      }
    });
  });
}

}  // namespace
}  // namespace tssd_fast

TORCH_LIBRARY_IMPL(tssd_fast, CPU, m) {
  namespace t = tssd_fast;
  m.impl("pack_spikes", &t::pack_spikes_on<c10::DeviceType::CPU, &t::launch_pack, &t::empty_cpu>);
  m.impl("unpack_spikes",
         &t::unpack_spikes_on<c10::DeviceType::CPU, &t::launch_unpack, &t::empty_cpu>);
}
