// CPU kernels of lean_avg_pool2d (csrc/lean_pool_op.cpp) for the pools of the spiking networks:
// NCHW input, windows that do not overlap (kernel == stride), no padding. ATen's NCHW kernels
// walk the windows one element at a time: its forward ran at 4 GB/s here, 6x slower than its own
// channels_last kernel, and its backward slower still (benchmarks/results/cpu_2026-12-08_avg_pool.md).
// These work a row of windows at a time, so the loops over the output row vectorize.
//
// Bit for bit ATen's results. Forward: each output is the sum of its window in ATen's order (row
// by row, left to right, from 0 in the compute type) divided by the divisor in the compute type.
// Backward: the output gradient divided by the divisor in the storage type (c10's scalar_t /
// int64_t), added to 0. tests/test_memory.py compares both with ATen on random values, every
// dtype, odd sizes and divisors 3, 5, 9 and 257.
#include "avg_pool_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/TensorGeometry.h>
#include <ATen/ops/empty.h>
#include <c10/core/MemoryFormat.h>
#include <c10/util/accumulate.h>

#include <algorithm>
#include <vector>

namespace tssd_fast {
namespace {

constexpr int64_t kRowsPerTask = 64;  // output rows per parallel task

template <typename scalar_t>
void pool_rows(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t H, int64_t W,
               int64_t kh, int64_t kw, int64_t Ho, int64_t Wo, int64_t divide, int64_t begin,
               int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<acc_t> acc(Wo);
  const acc_t div = static_cast<acc_t>(divide);
  for (int64_t r = begin; r < end; ++r) {  // output row r = plane * Ho + oh
    const int64_t plane = r / Ho, oh = r % Ho;
    acc_t* __restrict__ a = acc.data();
    std::fill(a, a + Wo, acc_t(0));
    for (int64_t ih = 0; ih < kh; ++ih) {
      const scalar_t* __restrict__ row = x + (plane * H + oh * kh + ih) * W;
      for (int64_t iw = 0; iw < kw; ++iw) {
        for (int64_t ow = 0; ow < Wo; ++ow) a[ow] += static_cast<acc_t>(row[ow * kw + iw]);
      }
    }
    scalar_t* __restrict__ out = y + r * Wo;
    for (int64_t ow = 0; ow < Wo; ++ow) out[ow] = static_cast<scalar_t>(a[ow] / div);
  }
}

// Input-gradient rows of output rows [begin, end): each input element in a window gets that
// window's gradient over the divisor, as ATen's backward computes it (the gradient divided by the
// divisor in the storage type, added to a zeroed input gradient); elements past the last window
// get 0.
template <typename scalar_t>
void pool_backward_rows(const scalar_t* __restrict__ g, scalar_t* __restrict__ gin, int64_t H,
                        int64_t W, int64_t kh, int64_t kw, int64_t Ho, int64_t Wo,
                        int64_t divide, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<scalar_t> wide(W);  // one input row: each window's value kw times, then zeros
  const acc_t div = static_cast<acc_t>(static_cast<scalar_t>(divide));
  for (int64_t r = begin; r < end; ++r) {  // output row r = plane * Ho + oh
    const int64_t plane = r / Ho, oh = r % Ho;
    const scalar_t* __restrict__ gr = g + r * Wo;
    scalar_t* __restrict__ e = wide.data();
    for (int64_t ow = 0; ow < Wo; ++ow) {
      const scalar_t delta = static_cast<scalar_t>(static_cast<acc_t>(gr[ow]) / div);
      const scalar_t v = static_cast<scalar_t>(acc_t(0) + static_cast<acc_t>(delta));
      for (int64_t iw = 0; iw < kw; ++iw) e[ow * kw + iw] = v;
    }
    std::fill(e + Wo * kw, e + W, scalar_t(0));
    for (int64_t ih = 0; ih < kh; ++ih) {
      std::copy(e, e + W, gin + (plane * H + oh * kh + ih) * W);
    }
    if (oh == Ho - 1) {  // the rows below the last window
      const int64_t first = plane * H + Ho * kh, last = (plane + 1) * H;
      std::fill(gin + first * W, gin + last * W, scalar_t(0));
    }
  }
}

}  // namespace

bool avg_pool2d_windows_apply(c10::Device device, c10::IntArrayRef size,
                              c10::IntArrayRef strides, c10::IntArrayRef kernel,
                              c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode) {
  if (!device.is_cpu() || size.size() != 4 || kernel.size() != 2 || stride.size() != 2 ||
      padding.size() != 2) {
    return false;
  }
  // memory in NCHW order (size-1 dims aside), and torch would give the result that layout too
  if (c10::multiply_integers(size) == 0 || !at::geometry_is_contiguous(size, strides) ||
      c10::is_channels_last_strides_2d(size, strides)) {
    return false;
  }
  const int64_t kh = kernel[0], kw = kernel[1], H = size[2], W = size[3];
  const bool windows = kh == stride[0] && kw == stride[1] && padding[0] == 0 &&
                       padding[1] == 0 && kh >= 1 && kw >= 1 && H >= kh && W >= kw;
  // ceil_mode adds a partial window only when a size is not a multiple of the kernel
  return windows && (!ceil_mode || (H % kh == 0 && W % kw == 0));
}

at::Tensor avg_pool2d_windows_cpu(const at::Tensor& x, int64_t kh, int64_t kw, int64_t divide) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = H / kh, Wo = W / kw;
  at::Tensor y = at::empty({N, C, Ho, Wo}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lean_avg_pool2d_cpu",
                                  [&] {
                                    const scalar_t* xp = x.const_data_ptr<scalar_t>();
                                    scalar_t* yp = y.data_ptr<scalar_t>();
                                    at::parallel_for(0, N * C * Ho, kRowsPerTask,
                                                     [&](int64_t begin, int64_t end) {
                                                       pool_rows(xp, yp, H, W, kh, kw, Ho, Wo,
                                                                 divide, begin, end);
                                                     });
                                  });
  return y;
}

at::Tensor avg_pool2d_windows_backward_cpu(const at::Tensor& grad_in, c10::IntArrayRef size,
                                           int64_t kh, int64_t kw, int64_t divide) {
  const at::Tensor g = grad_in.contiguous();
  const int64_t N = size[0], C = size[1], H = size[2], W = size[3];
  const int64_t Ho = g.size(2), Wo = g.size(3);
  at::Tensor gin = at::empty(size, g.options());
  if (gin.numel() == 0) return gin;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(),
                                  "lean_avg_pool2d_backward_cpu", [&] {
                                    const scalar_t* gp = g.const_data_ptr<scalar_t>();
                                    scalar_t* out = gin.data_ptr<scalar_t>();
                                    at::parallel_for(0, N * C * Ho, kRowsPerTask,
                                                     [&](int64_t begin, int64_t end) {
                                                       pool_backward_rows(gp, out, H, W, kh, kw,
                                                                          Ho, Wo, divide, begin,
                                                                          end);
                                                     });
                                  });
  return gin;
}

}  // namespace tssd_fast
