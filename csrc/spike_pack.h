// The bit layout of the packed spike inputs that tssd_fast.models.spike_layers keeps for
// backward (docs/MEMORY.md): the ONE C++ definition, shared by the CPU kernel
// (csrc/cpu/spike_pack_cpu.cpp) and the CUDA kernel (csrc/cuda/spike_pack_cuda.cu). The
// pure-PyTorch fallback in spike_layers.py computes the same bytes (tested bit for bit).
//
// x holds k / divisor for integers 0 <= k < 2^bits (divisor a power of two). Read in memory
// order as n elements, it is kept as `bits` planes of M = ceil(n / 8) bytes: plane j, byte m,
// bit i = bit j of k at element 8 m + i. The bits past n in the last byte are 0.
#pragma once

#include "lif_step.h"  // LIF_HD, <cstdint>

namespace tssd_fast {

constexpr int kMaxSpikeBits = 8;

// Byte m of every plane (planes[j * M + m]) from elements 8 m .. 8 m + 7 of x (n in all).
// k = the value times divisor, truncated to an integer, as torch's float -> uint8 cast does.
template <typename scalar_t>
LIF_HD void pack_spike_byte(const scalar_t* x, int64_t n, int64_t m, int64_t M, int bits,
                            float divisor, uint8_t* planes) {
  unsigned int out[kMaxSpikeBits] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int64_t base = 8 * m;
  const int count = n - base < 8 ? static_cast<int>(n - base) : 8;
  for (int i = 0; i < count; ++i) {
    const unsigned int k = static_cast<unsigned int>(static_cast<float>(x[base + i]) * divisor);
    for (int j = 0; j < bits; ++j) out[j] |= ((k >> j) & 1u) << i;
  }
  for (int j = 0; j < bits; ++j) planes[j * M + m] = static_cast<uint8_t>(out[j]);
}

// Inverse: elements 8 m .. min(8 m + 8, n) - 1 of the output (memory order) from byte m of
// every plane. k / divisor is exact in every float type (k <= 255, divisor a power of two).
template <typename scalar_t>
LIF_HD void unpack_spike_byte(const uint8_t* planes, int64_t n, int64_t m, int64_t M, int bits,
                              float inv_divisor, scalar_t* y) {
  unsigned int b[kMaxSpikeBits];
  for (int j = 0; j < bits; ++j) b[j] = planes[j * M + m];
  const int64_t base = 8 * m;
  const int count = n - base < 8 ? static_cast<int>(n - base) : 8;
  for (int i = 0; i < count; ++i) {
    unsigned int k = 0;
    for (int j = 0; j < bits; ++j) k |= ((b[j] >> i) & 1u) << j;
    y[base + i] = static_cast<scalar_t>(static_cast<float>(k) * inv_divisor);
  }
}

}  // namespace tssd_fast
