// The bit layout of the packed spike inputs that tssd_fast.models.spike_layers keeps for
// backward (docs/MEMORY.md), and the per-byte code of the CUDA kernel
// (csrc/cuda/spike_pack_kernels.cu). The CPU kernel (csrc/cpu/spike_pack_cpu.cpp) makes the same
// bytes a block at a time (these per-byte loops, scalar on the CPU, were 3.5-8x slower). The
// pure-PyTorch fallback in spike_layers.py computes the same bytes; the tests compare the CPU
// and CUDA ops with it bit for bit.
//
// x holds k / divisor for integers 0 <= k < 2^bits (divisor a power of two). Read in memory
// order as n elements, it is kept as `bits` planes of M = ceil(n / 8) bytes: plane j, byte m,
// bit i = bit j of k at element 8 m + i. The bits past n in the last byte are 0.
#pragma once

#include "lif_step.h"  // LIF_HD, <cstdint>

namespace tssd_fast {

constexpr int kMaxSpikeBits = 8;  // planes: the bytes of one 64-bit word

// Byte m of every plane (planes[j * M + m]) from elements 8 m .. 8 m + 7 of x (n in all).
// k = the value times divisor, truncated to an integer, as torch's float -> uint8 cast does.
// The planes' bytes are gathered in one 64-bit word (byte j = plane j), not an array: an array
// indexed by the run-time plane number would live in local memory on the GPU.
template <typename scalar_t>
LIF_HD void pack_spike_byte(const scalar_t* x, int64_t n, int64_t m, int64_t M, int bits,
                            float divisor, uint8_t* planes) {
  uint64_t out = 0;
  const int64_t base = 8 * m;
  const int count = n - base < 8 ? static_cast<int>(n - base) : 8;
  for (int i = 0; i < count; ++i) {
    const uint64_t k = static_cast<unsigned int>(static_cast<float>(x[base + i]) * divisor);
    for (int j = 0; j < bits; ++j) out |= ((k >> j) & 1u) << (8 * j + i);
  }
  for (int j = 0; j < bits; ++j) planes[j * M + m] = static_cast<uint8_t>(out >> (8 * j));
}

// Inverse: elements 8 m .. min(8 m + 8, n) - 1 of the output (memory order) from byte m of
// every plane. k / divisor is exact in every float type (k <= 255, divisor a power of two).
template <typename scalar_t>
LIF_HD void unpack_spike_byte(const uint8_t* planes, int64_t n, int64_t m, int64_t M, int bits,
                              float inv_divisor, scalar_t* y) {
  uint64_t in = 0;
  for (int j = 0; j < bits; ++j) in |= static_cast<uint64_t>(planes[j * M + m]) << (8 * j);
  const int64_t base = 8 * m;
  const int count = n - base < 8 ? static_cast<int>(n - base) : 8;
  for (int i = 0; i < count; ++i) {
    unsigned int k = 0;
    for (int j = 0; j < bits; ++j) k |= static_cast<unsigned int>((in >> (8 * j + i)) & 1u) << j;
    y[base + i] = static_cast<scalar_t>(static_cast<float>(k) * inv_divisor);
  }
}

}  // namespace tssd_fast
