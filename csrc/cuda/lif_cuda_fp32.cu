// The CUDA kernels and launchers of fp32 storage (lif_launch.cuh), in a translation unit of
// their own so that the build compiles each storage type's kernels in parallel.
#include "lif_launch.cuh"

namespace tssd_fast {
namespace cuda {
TSSD_FAST_CUDA_LAUNCHERS(, float)
}  // namespace cuda
}  // namespace tssd_fast
