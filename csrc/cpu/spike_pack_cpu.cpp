// CPU kernels of tssd_fast::pack_spikes / unpack_spikes (schema: csrc/lif_op.cpp; host side:
// csrc/spike_pack_host.h; bit layout: csrc/spike_pack.h): parallel over output bytes in torch's
// intra-op thread pool, in blocks of 64 bytes.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../spike_pack_host.h"
#include "empty_cpu.h"

namespace tssd_fast {
namespace {

constexpr int64_t kBytesPerTask = 16384;
constexpr int64_t kBlockBytes = 64;  // a block: 512 elements, their codes in a 512-byte buffer

// The CPU kernels make the bytes of csrc/spike_pack.h's pack_spike_byte / unpack_spike_byte (the
// CUDA kernel's per-byte code), a block at a time: the codes k of 512 elements in one loop (the
// conversion, which vectorizes), then each output byte from a 64-bit word of 8 codes. Per byte,
// with its run-time plane loops, the CPU ran at about 1 ns per element: 5% of a CPU TSSD step
// (benchmarks/results/cpu_2026-12-08_spike_pack.md).

// Byte of plane j from the codes of 8 consecutive elements, code i in byte i of w: bit i = bit j
// of code i. The multiply moves bit 8i to bit 56 + i; the other products land on distinct bits
// below 56 or past 63, so nothing carries into the top byte (checked for all 256 bit patterns).
inline uint8_t plane_byte(uint64_t w, int j) {
  const uint64_t b = (w >> j) & 0x0101010101010101ull;
  return static_cast<uint8_t>((b * 0x0102040810204080ull) >> 56);
}

// The 8 bits of a byte spread to bit 0 of 8 bytes (bit i -> byte i): the inverse of plane_byte.
struct SpreadTable {
  uint64_t w[256];
  constexpr SpreadTable() : w() {
    for (int p = 0; p < 256; ++p) {
      uint64_t v = 0;
      for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>((p >> i) & 1) << (8 * i);
      w[p] = v;
    }
  }
};
constexpr SpreadTable kSpread;

// Bytes [m0, m1) of every plane from elements 8 m0 .. min(8 m1, n) - 1 of x.
template <typename scalar_t>
void pack_block(const scalar_t* __restrict__ x, int64_t n, int64_t m0, int64_t m1, int64_t M,
                int bits, float divisor, uint8_t* __restrict__ planes) {
  uint8_t k[8 * kBlockBytes];
  const int64_t e0 = 8 * m0, count = std::min(8 * m1, n) - e0;
  // k = the value times divisor, truncated, as pack_spike_byte computes it (through int32, which
  // vectorizes; the same as its unsigned truncation for every valid code 0 <= k < 2^bits)
  for (int64_t i = 0; i < count; ++i) {
    k[i] = static_cast<uint8_t>(static_cast<int32_t>(static_cast<float>(x[e0 + i]) * divisor));
  }
  std::fill(k + count, k + 8 * (m1 - m0), uint8_t(0));  // bits past n are 0
  for (int64_t m = m0; m < m1; ++m) {
    const uint8_t* km = k + 8 * (m - m0);
    uint64_t w = 0;  // assembled by shifts, not memcpy: the same on any byte order
    for (int i = 0; i < 8; ++i) w |= static_cast<uint64_t>(km[i]) << (8 * i);
    for (int j = 0; j < bits; ++j) planes[j * M + m] = plane_byte(w, j);
  }
}

// Elements 8 m0 .. min(8 m1, n) - 1 of y from bytes [m0, m1) of every plane.
template <typename scalar_t>
void unpack_block(const uint8_t* __restrict__ planes, int64_t n, int64_t m0, int64_t m1,
                  int64_t M, int bits, float inv_divisor, scalar_t* __restrict__ y) {
  uint8_t k[8 * kBlockBytes];
  for (int64_t m = m0; m < m1; ++m) {
    uint64_t w = 0;
    for (int j = 0; j < bits; ++j) w |= kSpread.w[planes[j * M + m]] << j;
    uint8_t* km = k + 8 * (m - m0);
    for (int i = 0; i < 8; ++i) km[i] = static_cast<uint8_t>(w >> (8 * i));
  }
  const int64_t e0 = 8 * m0, count = std::min(8 * m1, n) - e0;
  // k / divisor is exact in every float type (k <= 255, divisor a power of two)
  for (int64_t i = 0; i < count; ++i) {
    y[e0 + i] = static_cast<scalar_t>(static_cast<float>(k[i]) * inv_divisor);
  }
}

void launch_pack(const PackArgs& a, const at::Tensor&) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.dtype, "pack_spikes_cpu", [&] {
    const auto* x = static_cast<const scalar_t*>(a.x);
    at::parallel_for(0, a.M, kBytesPerTask, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; m += kBlockBytes) {
        pack_block(x, a.n, m, std::min(m + kBlockBytes, end), a.M, a.bits, a.divisor,
                   a.planes);
      }
    });
  });
}

void launch_unpack(const UnpackArgs& a, const at::Tensor&) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.dtype, "unpack_spikes_cpu", [&] {
    auto* y = static_cast<scalar_t*>(a.y);
    at::parallel_for(0, a.M, kBytesPerTask, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; m += kBlockBytes) {
        unpack_block(a.planes, a.n, m, std::min(m + kBlockBytes, end), a.M, a.bits,
                     a.inv_divisor, y);
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
