// The norm regulariser's sum of powers in one pass, and its gradient in one more:
//
//   power_sum           sum |x|^p over a (N, width) table; with `modulus`, over the moduli of the complex
//                       coordinates of [re | im] rows (sqrt(re^2 + im^2 + 1e-30), the N3 regulariser)
//   power_sum_backward  its gradient times the upstream scalar
//
// The sum is taken in blocks of a fixed size, each in double precision, and the blocks are added in
// order: the result does not depend on the number of threads.

#include <torch/library.h>

#include "common.h"

namespace kgexp {
namespace {

constexpr int64_t BLOCK_ROWS = 64;

// m^P for the common powers (P = 1, 2, 3) and any other (P = 0: p at run time).
template <int64_t P>
inline float power(float m, int64_t p) {
  if constexpr (P == 1) return m;
  if constexpr (P == 2) return m * m;
  if constexpr (P == 3) return m * m * m;
  return std::pow(m, static_cast<float>(p));
}

// d |v|^p / d v = p |v|^(p - 2) v, written so that p = 1 gives sign(v) and |v| = 0 gives 0.
template <int64_t P>
inline float power_slope(float v, float m, int64_t p) {
  if constexpr (P == 1) return static_cast<float>((v > 0.0f) - (v < 0.0f));
  if constexpr (P == 2) return 2.0f * v;
  if constexpr (P == 3) return 3.0f * v * m;
  return m > 0.0f ? static_cast<float>(p) * std::pow(m, static_cast<float>(p - 2)) * v : 0.0f;
}

// body(integral_constant<P>) with P = p for p = 1, 2, 3, else P = 0.
template <typename F>
void dispatch_power(int64_t p, F&& body) {
  switch (p) {
    case 1: body(std::integral_constant<int64_t, 1>{}); break;
    case 2: body(std::integral_constant<int64_t, 2>{}); break;
    case 3: body(std::integral_constant<int64_t, 3>{}); break;
    default: body(std::integral_constant<int64_t, 0>{});
  }
}

void check_table(const at::Tensor& x, bool modulus) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 2,
              "kgexp kernels: power_sum takes a float32 (N, width) CPU table");
  TORCH_CHECK(!modulus || x.size(1) % 2 == 0, "kgexp kernels: power_sum with modulus needs [re | im] rows");
}

at::Tensor power_sum(const at::Tensor& x_in, int64_t p, bool modulus) {
  check_table(x_in, modulus);
  const auto x = x_in.contiguous();
  const int64_t rows = x.size(0), width = x.size(1), half = width / 2;
  const int64_t blocks = (rows + BLOCK_ROWS - 1) / BLOCK_ROWS;
  std::vector<double> partial(blocks, 0.0);
  const float* v = x.data_ptr<float>();
  dispatch_power(p, [&](auto power_constant) {
    constexpr int64_t P = decltype(power_constant)::value;
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block) {
        double sum = 0.0;
        for (int64_t r = block * BLOCK_ROWS; r < std::min(rows, (block + 1) * BLOCK_ROWS); ++r) {
          const float* row = v + r * width;
          float acc = 0.0f;
          if (modulus) {
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < half; ++j) {
              acc += power<P>(std::sqrt(row[j] * row[j] + row[j + half] * row[j + half] + 1e-30f), p);
            }
          } else {
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < width; ++j) acc += power<P>(std::abs(row[j]), p);
          }
          sum += acc;
        }
        partial[block] = sum;
      }
    });
  });
  double total = 0.0;
  for (const double s : partial) total += s;
  return at::scalar_tensor(static_cast<float>(total), x.options());
}

at::Tensor power_sum_backward(const at::Tensor& grad, const at::Tensor& x_in, int64_t p, bool modulus) {
  check_table(x_in, modulus);
  const auto x = x_in.contiguous();
  const int64_t rows = x.size(0), width = x.size(1), half = width / 2;
  const float g = grad.item<float>();
  auto out = at::empty_like(x);
  const float* v = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  dispatch_power(p, [&](auto power_constant) {
    constexpr int64_t P = decltype(power_constant)::value;
    at::parallel_for(0, rows, BLOCK_ROWS, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const float* row = v + r * width;
        float* grad_row = o + r * width;
        if (modulus) {  // d m^p / d re = p m^(p - 2) re with m the modulus: the slope of m^p at m, over m
#pragma omp simd
          for (int64_t j = 0; j < half; ++j) {
            const float m = std::sqrt(row[j] * row[j] + row[j + half] * row[j + half] + 1e-30f);
            const float scale = g * power_slope<P>(m, m, p) / m;
            grad_row[j] = scale * row[j];
            grad_row[j + half] = scale * row[j + half];
          }
        } else {
#pragma omp simd
          for (int64_t j = 0; j < width; ++j) grad_row[j] = g * power_slope<P>(row[j], std::abs(row[j]), p);
        }
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace kgexp

TORCH_LIBRARY_FRAGMENT(kgexp, m) {
  m.def("power_sum(Tensor x, int p, bool modulus) -> Tensor");
  m.def("power_sum_backward(Tensor grad, Tensor x, int p, bool modulus) -> Tensor");
}

TORCH_LIBRARY_IMPL(kgexp, CPU, m) {
  m.impl("power_sum", &kgexp::power_sum);
  m.impl("power_sum_backward", &kgexp::power_sum_backward);
}
