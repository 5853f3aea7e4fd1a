// The CUDA kernels of the spike packing ops: one thread per packed byte, the per-byte code of
// csrc/spike_pack.h (shared with the CPU kernel). A layer's input is small next to the
// convolution that reads it; these kernels exist to make packing one launch, not five.
#include "spike_pack_launch.h"

#include "../spike_pack.h"

namespace tssd_fast {
namespace cuda {
namespace {

constexpr int kPackThreads = 256;

template <typename scalar_t>
__global__ void __launch_bounds__(kPackThreads)
    pack_kernel(const scalar_t* __restrict__ x, int64_t n, int64_t M, int bits, float divisor,
                uint8_t* __restrict__ planes) {
  const int64_t m = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (m < M) pack_spike_byte(x, n, m, M, bits, divisor, planes);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kPackThreads)
    unpack_kernel(const uint8_t* __restrict__ planes, int64_t n, int64_t M, int bits,
                  float inv_divisor, scalar_t* __restrict__ y) {
  const int64_t m = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (m < M) unpack_spike_byte(planes, n, m, M, bits, inv_divisor, y);
}

unsigned int blocks_for(int64_t M) {
  return static_cast<unsigned int>((M + kPackThreads - 1) / kPackThreads);
}

}  // namespace

template <typename scalar_t>
void launch_pack_typed(const scalar_t* x, int64_t n, int64_t M, int bits, float divisor,
                       uint8_t* planes, cudaStream_t stream) {
  pack_kernel<scalar_t><<<blocks_for(M), kPackThreads, 0, stream>>>(x, n, M, bits, divisor, planes);
}

template <typename scalar_t>
void launch_unpack_typed(const uint8_t* planes, int64_t n, int64_t M, int bits,
                         float inv_divisor, scalar_t* y, cudaStream_t stream) {
  unpack_kernel<scalar_t><<<blocks_for(M), kPackThreads, 0, stream>>>(planes, n, M, bits,
                                                                      inv_divisor, y);
}

TSSD_FAST_PACK_LAUNCHERS(, float)
TSSD_FAST_PACK_LAUNCHERS(, double)
TSSD_FAST_PACK_LAUNCHERS(, at::Half)
TSSD_FAST_PACK_LAUNCHERS(, at::BFloat16)

}  // namespace cuda
}  // namespace tssd_fast
