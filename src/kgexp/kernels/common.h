// What the kernels share: the scorers, their dispatch and the input checks.
//
// Scorers (`kind`): 0 dot product, 1 gamma - L1 distance, 2 gamma - L2 distance, 3 gamma - sum of complex
// moduli of the difference (RotatE; rows are [re | im] halves).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace kgexp {

constexpr int64_t DOT = 0, L1 = 1, L2 = 2, MODULUS = 3;

template <int64_t KIND>
inline float score_row(const float* q, const float* c, int64_t width, float gamma) {
  float acc = 0.0f;
  if constexpr (KIND == DOT) {
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < width; ++j) acc += q[j] * c[j];
    return acc;
  } else if constexpr (KIND == L1) {
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < width; ++j) acc += std::abs(q[j] - c[j]);
    return gamma - acc;
  } else if constexpr (KIND == L2) {
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < width; ++j) {
      const float d = q[j] - c[j];
      acc += d * d;
    }
    return gamma - std::sqrt(acc);
  } else {
    const int64_t half = width / 2;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < half; ++j) {
      const float re = q[j] - c[j], im = q[j + half] - c[j + half];
      acc += std::sqrt(re * re + im * im);
    }
    return gamma - acc;
  }
}

// Four pairs' scores at once, out[i] = score_row(q[i], c[i]): four independent accumulators keep the
// vector units busy where one score is a chain of dependent adds. In a row walk the four pairs share their
// candidate row. Each score is summed in the same order as score_row's.
template <int64_t KIND>
inline void score_four(const float* const* q, const float* const* c, int64_t width, float gamma,
                       float* __restrict__ out) {
  const float *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3], *c0 = c[0], *c1 = c[1], *c2 = c[2], *c3 = c[3];
  float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
  if constexpr (KIND == DOT) {
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t j = 0; j < width; ++j) {
      a0 += q0[j] * c0[j];
      a1 += q1[j] * c1[j];
      a2 += q2[j] * c2[j];
      a3 += q3[j] * c3[j];
    }
    out[0] = a0, out[1] = a1, out[2] = a2, out[3] = a3;
    return;
  } else if constexpr (KIND == L1) {
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t j = 0; j < width; ++j) {
      a0 += std::abs(q0[j] - c0[j]);
      a1 += std::abs(q1[j] - c1[j]);
      a2 += std::abs(q2[j] - c2[j]);
      a3 += std::abs(q3[j] - c3[j]);
    }
  } else if constexpr (KIND == L2) {
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t j = 0; j < width; ++j) {
      const float d0 = q0[j] - c0[j], d1 = q1[j] - c1[j], d2 = q2[j] - c2[j], d3 = q3[j] - c3[j];
      a0 += d0 * d0;
      a1 += d1 * d1;
      a2 += d2 * d2;
      a3 += d3 * d3;
    }
    a0 = std::sqrt(a0), a1 = std::sqrt(a1), a2 = std::sqrt(a2), a3 = std::sqrt(a3);
  } else {
    const int64_t half = width / 2;
    auto modulus = [](float re, float im) { return std::sqrt(re * re + im * im); };
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t j = 0; j < half; ++j) {
      a0 += modulus(q0[j] - c0[j], q0[j + half] - c0[j + half]);
      a1 += modulus(q1[j] - c1[j], q1[j + half] - c1[j + half]);
      a2 += modulus(q2[j] - c2[j], q2[j + half] - c2[j + half]);
      a3 += modulus(q3[j] - c3[j], q3[j + half] - c3[j + half]);
    }
  }
  out[0] = gamma - a0, out[1] = gamma - a1, out[2] = gamma - a2, out[3] = gamma - a3;
}

template <typename F>
void dispatch_kind(int64_t kind, F&& body) {
  switch (kind) {
    case DOT: body(std::integral_constant<int64_t, DOT>{}); break;
    case L1: body(std::integral_constant<int64_t, L1>{}); break;
    case L2: body(std::integral_constant<int64_t, L2>{}); break;
    case MODULUS: body(std::integral_constant<int64_t, MODULUS>{}); break;
    default: TORCH_CHECK(false, "kgexp kernels: unknown scorer kind ", kind);
  }
}

inline void check_inputs(const at::Tensor& queries, const at::Tensor& table) {
  TORCH_CHECK(queries.device().is_cpu() && table.device().is_cpu(), "kgexp kernels run on CPU tensors");
  TORCH_CHECK(queries.scalar_type() == at::kFloat && table.scalar_type() == at::kFloat,
              "kgexp kernels take float32 queries and tables");
  TORCH_CHECK(queries.dim() == 2 && table.dim() == 2 && queries.size(1) == table.size(1),
              "kgexp kernels: queries (B, width) and table (N, width) must have the same width");
}

}  // namespace kgexp
