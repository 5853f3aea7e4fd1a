// CUDA kernels of the fused multi-step LIF op, registered for the CUDA dispatch key of
// tssd_fast::lif_forward / lif_backward (and of pack_spikes / unpack_spikes, whose kernels are in
// spike_pack_kernels.cu) (schema and autograd: csrc/lif_op.cpp, in tssd_fast._C;
// this file and lif_cuda_<dtype>.cu build tssd_fast._C_cuda). This file: the dtype dispatch,
// the launch shape, the registration. Kernels and typed launchers: lif_launch.cuh, compiled per
// storage type in lif_cuda_<dtype>.cu; checks, memory order and output allocation:
// csrc/lif_host.h (shared with the CPU kernel); kernel bodies: csrc/cuda/lif_kernels.cuh (shared
// with the CuPy/NVRTC path); per-step math: csrc/lif_step.h. Launched on torch's current stream,
// under a device guard, one launch per direction, no fills or casts outside the kernels.
// Host code only (compiled by the host compiler): no nvcc front end over torch's headers here.
// Narrow headers on purpose: <torch/extension.h> would triple the compile time of this file.
#include <ATen/Dispatch.h>
#include <ATen/cuda/EmptyTensor.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <utility>

#include "../lif_host.h"
#include "../spike_pack_host.h"
#include "lif_launch.h"
#include "spike_pack_launch.h"

namespace tssd_fast {
namespace cuda {

int pick_vec(int64_t N, int vec16, std::initializer_list<std::pair<const void*, int64_t>> ptrs) {
  if (N % vec16 != 0) return 1;
  for (const auto& pe : ptrs) {
    const auto addr = reinterpret_cast<std::uintptr_t>(pe.first);
    if (pe.first != nullptr && addr % static_cast<std::uintptr_t>(vec16 * pe.second) != 0) {
      return 1;
    }
  }
  return vec16;
}

LaunchShape launch_shape(int64_t N, int vec, int max_threads, const at::Tensor& like) {
  const int64_t work = (N + vec - 1) / vec;
  static int sms_of[64] = {0};  // per device index: the attribute query is a driver call
  const int dev = like.device().index();
  int& sms = sms_of[dev & 63];
  if (sms == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  }
  int threads = max_threads;
  while (threads > 64 && (work + threads - 1) / threads < 2 * sms) threads /= 2;
  return {static_cast<unsigned int>((work + threads - 1) / threads),
          static_cast<unsigned int>(threads)};
}

namespace {

void launch_forward(const ForwardArgs& a) {
  const c10::cuda::CUDAGuard guard(a.x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(a.x.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "lif_forward_cuda",
                                  [&] { launch_forward_typed<scalar_t>(a, stream); });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_backward(const BackwardArgs& a) {
  const int surrogate = flag_surrogate(a.flags);
  TORCH_CHECK(surrogate <= 2, "tssd_fast: unknown surrogate id ", surrogate);
  const c10::cuda::CUDAGuard guard(a.grad_s.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(a.grad_s.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.grad_s.scalar_type(),
                                  "lif_backward_cuda",
                                  [&] { launch_backward_typed<scalar_t>(a, stream); });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_pack(const PackArgs& a, const at::Tensor& like) {
  const c10::cuda::CUDAGuard guard(like.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(like.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.dtype, "pack_spikes_cuda", [&] {
    launch_pack_typed<scalar_t>(static_cast<const scalar_t*>(a.x), a.n, a.M, a.bits, a.divisor,
                                a.planes, stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_unpack(const UnpackArgs& a, const at::Tensor& like) {
  const c10::cuda::CUDAGuard guard(like.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(like.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.dtype, "unpack_spikes_cuda", [&] {
    launch_unpack_typed<scalar_t>(a.planes, a.n, a.M, a.bits, a.inv_divisor,
                                  static_cast<scalar_t*>(a.y), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor empty_cuda(c10::IntArrayRef sizes, at::ScalarType dtype, const at::Tensor& like) {
  return at::Tensor(at::detail::empty_cuda(sizes, dtype, like.device(), std::nullopt));
}

}  // namespace
}  // namespace cuda
}  // namespace tssd_fast

TORCH_LIBRARY_IMPL(tssd_fast, CUDA, m) {
  namespace tc = tssd_fast::cuda;
  m.impl("lif_forward", &tssd_fast::lif_forward_on<c10::DeviceType::CUDA, &tc::launch_forward,
                                                   &tc::empty_cuda>);
  m.impl("lif_backward", &tssd_fast::lif_backward_on<c10::DeviceType::CUDA,
                                                     &tc::launch_backward, &tc::empty_cuda>);
  m.impl("pack_spikes",
         &tssd_fast::pack_spikes_on<c10::DeviceType::CUDA, &tc::launch_pack, &tc::empty_cuda>);
  m.impl("unpack_spikes", &tssd_fast::unpack_spikes_on<c10::DeviceType::CUDA, &tc::launch_unpack,
                                                       &tc::empty_cuda>);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "tssd_fast: the CUDA kernel of the fused LIF op (registered for the CUDA key)";
  m.def("set_poison", [](bool on) { tssd_fast::poison_flag() = on; },
        "tests: fill every fresh op output with NaN / 0xA5");
}
