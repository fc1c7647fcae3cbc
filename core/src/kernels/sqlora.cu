// sqlora's own CUDA kernels: NF4 dequantization, counter-based dropout, and the
// fused optimizer step (gradient sum of squares, AdamW). Compiled to PTX by
// core/build.rs when the `cuda` feature is on; launched from core/src/cuda.rs.
//
// Every kernel computes exactly what its CPU twin in Rust computes (same f32
// operations in the same order, no fused multiply-add where the CPU has none),
// so CPU and GPU runs agree bit for bit where the arithmetic allows.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// bitsandbytes' NF4 code table (index -> value); core/src/nf4.rs NF4_CODE.
__constant__ float NF4[16] = {
    -1.0f, -0.6961928f, -0.52507305f, -0.3949175f, -0.28444138f, -0.18477343f, -0.091050036f, 0.0f,
    0.0795803f, 0.1609302f, 0.2461123f, 0.33791524f, 0.44070983f, 0.562617f, 0.72295684f, 1.0f};

__device__ __forceinline__ void store(float *p, float v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ float load(const float *p) { return *p; }
__device__ __forceinline__ float load(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ float load(const __half *p) { return __half2float(*p); }

// scale of 64-block b: code2[absmax_q[b]] * absmax2[b / 256] + offset, as two rounded f32 ops.
__device__ __forceinline__ float block_scale(const uint8_t *absmax_q, const float *absmax2, const float *code2,
                                             float offset, uint64_t b) {
  return __fadd_rn(__fmul_rn(code2[absmax_q[b]], absmax2[b / 256]), offset);
}

// Vector path (n % 32 == 0): one thread per 16 packed bytes = 32 values, half a
// 64-block; one 16-byte load, 64 (bf16/f16) or 128 (f32) bytes of 16-byte stores.
// Scalar path (any n): one thread per 8 values.
template <typename T>
__device__ void nf4_dequant(const uint8_t *packed, const uint8_t *absmax_q, const float *absmax2,
                            const float *code2, float offset, T *out, uint64_t n) {
  uint64_t g = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (n % 32 == 0) {
    uint64_t first = g * 32;
    if (first >= n) return;
    float s = block_scale(absmax_q, absmax2, code2, offset, first / 64);
    uint4 w = reinterpret_cast<const uint4 *>(packed)[g];
    uint32_t words[4] = {w.x, w.y, w.z, w.w};
    T v[32];
#pragma unroll
    for (int k = 0; k < 16; k++) {
      uint32_t byte = (words[k / 4] >> (8 * (k % 4))) & 0xff;
      store(&v[2 * k], __fmul_rn(NF4[byte >> 4], s));
      store(&v[2 * k + 1], __fmul_rn(NF4[byte & 15], s));
    }
    const uint4 *src = reinterpret_cast<const uint4 *>(v);
    uint4 *dst = reinterpret_cast<uint4 *>(out) + g * (32 * sizeof(T) / 16);
#pragma unroll
    for (int k = 0; k < (int)(32 * sizeof(T) / 16); k++) dst[k] = src[k];
  } else {
    uint64_t first = g * 8;
    if (first >= n) return;
    float s = block_scale(absmax_q, absmax2, code2, offset, first / 64);
    for (uint64_t i = first; i < first + 8 && i < n; i++) {
      uint8_t byte = packed[i / 2];
      uint32_t c = (i % 2 == 0) ? (byte >> 4) : (byte & 15);
      store(&out[i], __fmul_rn(NF4[c], s));
    }
  }
}

// SplitMix64 of seed + i·golden: the same mask bits as core/src/dropout.rs.
__device__ __forceinline__ uint32_t mask_bits(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (uint32_t)(z >> 32);
}

// y = keep ? x * scale : 0, keep = bits >= threshold (P(keep) = 1 - p).
template <typename T>
__device__ void dropout(const T *x, T *y, uint64_t n, uint64_t seed, uint32_t threshold, float scale) {
  uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  store(&y[i], mask_bits(seed, i) >= threshold ? __fmul_rn(load(&x[i]), scale) : 0.0f);
}

#define INSTANTIATE(NAME, T)                                                                            \
  extern "C" __global__ void nf4_dequant_##NAME(const uint8_t *packed, const uint8_t *absmax_q,        \
                                                const float *absmax2, const float *code2, float offset, \
                                                T *out, uint64_t n) {                                   \
    nf4_dequant<T>(packed, absmax_q, absmax2, code2, offset, out, n);                                   \
  }                                                                                                     \
  extern "C" __global__ void dropout_##NAME(const T *x, T *y, uint64_t n, uint64_t seed,               \
                                            uint32_t threshold, float scale) {                          \
    dropout<T>(x, y, n, seed, threshold, scale);                                                        \
  }
INSTANTIATE(f32, float)
INSTANTIATE(bf16, __nv_bfloat16)
INSTANTIATE(f16, __half)

// acc[slot * gridDim.x + block] = this block's part of the sum of g[i]^2 (a
// fixed grid and reduction order: the same gradients always give the same norm).
extern "C" __global__ void sumsq_f32(const float *g, uint64_t n, float *acc, uint32_t slot) {
  __shared__ float part[1024];
  float s = 0.0f;
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
    s = __fmaf_rn(g[i], g[i], s);
  part[threadIdx.x] = s;
  __syncthreads();
  for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) acc[(uint64_t)slot * gridDim.x + blockIdx.x] = part[0];
}

// torch.optim.AdamW's moments with the clipped gradient g·coef[0]:
// m = b1·m + (1-b1)·g, v = b2·v + (1-b2)·g².  mv holds m then v.
extern "C" __global__ void adamw_moments_f32(float *mv, const float *g, const float *coef, uint64_t n,
                                             float b1, float one_minus_b1, float b2, float one_minus_b2) {
  uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float gi = __fmul_rn(g[i], coef[0]);
  mv[i] = __fadd_rn(__fmul_rn(mv[i], b1), __fmul_rn(gi, one_minus_b1));
  mv[n + i] = __fadd_rn(__fmul_rn(mv[n + i], b2), __fmul_rn(__fmul_rn(gi, gi), one_minus_b2));
}

// p = p·decay − step·m / (√v / bc2_sqrt + eps).
extern "C" __global__ void adamw_apply_f32(float *p, const float *mv, uint64_t n, float decay, float step,
                                           float bc2_sqrt, float eps) {
  uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float denom = __fadd_rn(__fdiv_rn(sqrtf(mv[n + i]), bc2_sqrt), eps);
  p[i] = __fsub_rn(__fmul_rn(p[i], decay), __fmul_rn(__fdiv_rn(mv[i], denom), step));
}
