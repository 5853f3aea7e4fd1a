// The CUDA launchers of the fused LIF op, one pair per storage type, and the pieces they
// share. Each storage type's kernels are compiled in a translation unit of their own
// (lif_cuda_<dtype>.cu, from lif_launch.cuh), so a build compiles the four in parallel; the
// dtype dispatch and the op's registration are in lif_cuda.cpp (host code only).
#pragma once

#include <cuda_runtime_api.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <initializer_list>
#include <utility>

#include "../lif_host.h"

namespace tssd_fast {
namespace cuda {

// One launch per direction on `stream` (the caller holds the device guard and checks the
// launch). scalar_t: float, double, at::Half or at::BFloat16.
template <typename scalar_t>
void launch_forward_typed(const ForwardArgs& a, cudaStream_t stream);
template <typename scalar_t>
void launch_backward_typed(const BackwardArgs& a, cudaStream_t stream);

#define TSSD_FAST_CUDA_LAUNCHERS(EXTERN, scalar_t)                                            \
  EXTERN template void launch_forward_typed<scalar_t>(const ForwardArgs&, cudaStream_t);  \
  EXTERN template void launch_backward_typed<scalar_t>(const BackwardArgs&, cudaStream_t);
TSSD_FAST_CUDA_LAUNCHERS(extern, float)
TSSD_FAST_CUDA_LAUNCHERS(extern, double)
TSSD_FAST_CUDA_LAUNCHERS(extern, at::Half)
TSSD_FAST_CUDA_LAUNCHERS(extern, at::BFloat16)

// VEC = 16 bytes of the storage type (vec16) when N % vec16 == 0 and every (pointer, element
// size) is aligned to vec16 elements, else 1. Null pointers do not constrain. Only these two
// widths are compiled: the 16-byte kernels are specialized per flag combination, and any
// misaligned or odd-sized input takes the one general VEC=1 kernel. cupy_lif.pick_vec applies
// the same alignment rule over (4, 2, 1).
int pick_vec(int64_t N, int vec16, std::initializer_list<std::pair<const void*, int64_t>> ptrs);

// Launch shape: max_threads (the kernels' kThreads) per block while that still gives every SM
// two blocks, else smaller blocks (down to 64 threads) so a small N still spreads over the whole
// device. The SM count is queried once per device.
struct LaunchShape {
  unsigned int blocks, threads;
};
LaunchShape launch_shape(int64_t N, int vec, int max_threads, const at::Tensor& like);

}  // namespace cuda
}  // namespace tssd_fast
