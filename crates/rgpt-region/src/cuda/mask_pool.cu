// Mask pooling (RegionGPT, paper Sec. 3.1) on the GPU: each region's
// feature is the weighted sum of the feature map's cells it covers,
// out[r, c] = sum_k w[k] * features[image[r], c, cell[k]] over the region's
// CSR row (row_ptr[r] .. row_ptr[r + 1]), the weights already normalised to
// sum to one. Compiled at first use by NVRTC (crates/rgpt-region/src/cuda.rs)
// for the device's architecture; `crates/rgpt-region/tests/cuda_kernels.rs`
// compiles it for compute_80 and compute_90 in CI, warnings as errors.
//
// Layout: features [B, C, HW] contiguous (the refined map as libtorch holds
// it), in T = float, __nv_bfloat16 or __half; out [N, C] float. One block per
// (region, tile of channels); each warp takes one channel at a time and its
// lanes stride over the region's cells (sorted, so a box's rows are read in
// runs), then reduce with shuffles. Accumulation is in float.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define RGPT_WARPS 8
#define RGPT_CHANNELS_PER_BLOCK 32

__device__ __forceinline__ float rgpt_to_float(float x) { return x; }
__device__ __forceinline__ float rgpt_to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float rgpt_to_float(__half x) { return __half2float(x); }

__device__ __forceinline__ float rgpt_warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) {
    v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// CSR form: any shape, any weights.
template <typename T>
__device__ void rgpt_mask_pool_csr(const T* __restrict__ features, const long long* __restrict__ row_ptr,
                                   const int* __restrict__ cells, const float* __restrict__ weights,
                                   const int* __restrict__ image, float* __restrict__ out, int channels,
                                   long long cells_per_image) {
  const int region = blockIdx.x;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const long long begin = row_ptr[region];
  const long long end = row_ptr[region + 1];
  const T* base = features + (long long)image[region] * channels * cells_per_image;
  for (int c = blockIdx.y * RGPT_CHANNELS_PER_BLOCK + warp;
       c < channels && c < (blockIdx.y + 1) * RGPT_CHANNELS_PER_BLOCK; c += RGPT_WARPS) {
    const T* channel = base + (long long)c * cells_per_image;
    float acc = 0.0f;
    for (long long k = begin + lane; k < end; k += 32) {
      acc += weights[k] * rgpt_to_float(channel[cells[k]]);
    }
    acc = rgpt_warp_sum(acc);
    if (lane == 0) {
      out[(long long)region * channels + c] = acc;
    }
  }
}

// Box form: region r covers rows box[4r] .. box[4r + 1] (exclusive) and
// columns box[4r + 2] .. box[4r + 3] of a grid `width` wide, each cell with
// weight 1 / area; no cell list to read.
template <typename T>
__device__ void rgpt_mask_pool_box(const T* __restrict__ features, const int* __restrict__ boxes,
                                   const int* __restrict__ image, float* __restrict__ out, int channels,
                                   int width, long long cells_per_image) {
  const int region = blockIdx.x;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int y0 = boxes[4 * region], y1 = boxes[4 * region + 1];
  const int x0 = boxes[4 * region + 2], x1 = boxes[4 * region + 3];
  const int box_width = x1 - x0;
  const long long area = (long long)(y1 - y0) * box_width;
  const float weight = 1.0f / (float)area;
  const T* base = features + (long long)image[region] * channels * cells_per_image;
  for (int c = blockIdx.y * RGPT_CHANNELS_PER_BLOCK + warp;
       c < channels && c < (blockIdx.y + 1) * RGPT_CHANNELS_PER_BLOCK; c += RGPT_WARPS) {
    const T* channel = base + (long long)c * cells_per_image;
    float acc = 0.0f;
    for (long long k = lane; k < area; k += 32) {
      const int y = y0 + (int)(k / box_width);
      const int x = x0 + (int)(k % box_width);
      acc += rgpt_to_float(channel[(long long)y * width + x]);
    }
    acc = rgpt_warp_sum(acc) * weight;
    if (lane == 0) {
      out[(long long)region * channels + c] = acc;
    }
  }
}

// The gradient with respect to the features (float), for a CSR region
// list: grad_features[image[r], c, cell[k]] += w[k] * grad_out[r, c]. Cells
// shared by regions add up, hence the atomics.
__device__ void rgpt_mask_pool_csr_backward(const float* __restrict__ grad_out,
                                            const long long* __restrict__ row_ptr,
                                            const int* __restrict__ cells, const float* __restrict__ weights,
                                            const int* __restrict__ image, float* __restrict__ grad_features,
                                            int channels, long long cells_per_image) {
  const int region = blockIdx.x;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const long long begin = row_ptr[region];
  const long long end = row_ptr[region + 1];
  float* base = grad_features + (long long)image[region] * channels * cells_per_image;
  for (int c = blockIdx.y * RGPT_CHANNELS_PER_BLOCK + warp;
       c < channels && c < (blockIdx.y + 1) * RGPT_CHANNELS_PER_BLOCK; c += RGPT_WARPS) {
    const float g = grad_out[(long long)region * channels + c];
    float* channel = base + (long long)c * cells_per_image;
    for (long long k = begin + lane; k < end; k += 32) {
      atomicAdd(channel + cells[k], weights[k] * g);
    }
  }
}

#define RGPT_FORWARD(SUFFIX, T)                                                                      \
  extern "C" __global__ void rgpt_mask_pool_csr_##SUFFIX(                                            \
      const T* features, const long long* row_ptr, const int* cells, const float* weights,           \
      const int* image, float* out, int channels, long long cells_per_image) {                       \
    rgpt_mask_pool_csr<T>(features, row_ptr, cells, weights, image, out, channels, cells_per_image); \
  }                                                                                                  \
  extern "C" __global__ void rgpt_mask_pool_box_##SUFFIX(const T* features, const int* boxes,        \
                                                         const int* image, float* out, int channels, \
                                                         int width, long long cells_per_image) {     \
    rgpt_mask_pool_box<T>(features, boxes, image, out, channels, width, cells_per_image);            \
  }

RGPT_FORWARD(f32, float)
RGPT_FORWARD(bf16, __nv_bfloat16)
RGPT_FORWARD(f16, __half)

extern "C" __global__ void rgpt_mask_pool_csr_backward_f32(const float* grad_out, const long long* row_ptr,
                                                           const int* cells, const float* weights,
                                                           const int* image, float* grad_features,
                                                           int channels, long long cells_per_image) {
  rgpt_mask_pool_csr_backward(grad_out, row_ptr, cells, weights, image, grad_features, channels,
                              cells_per_image);
}
