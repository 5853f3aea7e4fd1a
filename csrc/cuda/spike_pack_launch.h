// CUDA launchers of the spike packing ops (bit layout: csrc/spike_pack.h; host side:
// csrc/spike_pack_host.h; registered in lif_cuda.cpp). One launch of one thread per packed byte
// on `stream`; the caller holds the device guard and checks the launch.
#pragma once

#include <cuda_runtime_api.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace tssd_fast {
namespace cuda {

template <typename scalar_t>
void launch_pack_typed(const scalar_t* x, int64_t n, int64_t M, int bits, float divisor,
                       uint8_t* planes, cudaStream_t stream);
template <typename scalar_t>
void launch_unpack_typed(const uint8_t* planes, int64_t n, int64_t M, int bits,
                         float inv_divisor, scalar_t* y, cudaStream_t stream);

#define TSSD_FAST_PACK_LAUNCHERS(EXTERN, scalar_t)                                          \
  EXTERN template void launch_pack_typed<scalar_t>(const scalar_t*, int64_t, int64_t, int,   \
                                                   float, uint8_t*, cudaStream_t);           \
  EXTERN template void launch_unpack_typed<scalar_t>(const uint8_t*, int64_t, int64_t, int,  \
                                                     float, scalar_t*, cudaStream_t);
TSSD_FAST_PACK_LAUNCHERS(extern, float)
TSSD_FAST_PACK_LAUNCHERS(extern, double)
TSSD_FAST_PACK_LAUNCHERS(extern, at::Half)
TSSD_FAST_PACK_LAUNCHERS(extern, at::BFloat16)

}  // namespace cuda
}  // namespace tssd_fast
