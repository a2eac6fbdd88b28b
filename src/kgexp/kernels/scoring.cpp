// Fused gather-and-score kernels for the CPU.
//
// A training step scores each query against its own candidates, given by id. Done with tensor ops, that
// gathers a (B, K, width) tensor of candidate rows, scores it, and in the backward writes a second one
// and scatter-adds it into the table's gradient: on a CPU the step is bound by that memory traffic. These
// kernels read the candidate rows straight from the table and never build the (B, K, width) tensors:
//
//   score_each           (B, K) scores of queries (B, width) against table[ids] (ids: (B, K))
//   score_each_backward  gradients for the queries and the whole table (rows grouped per entity by a
//                        counting sort, so each table row is written by one thread: no atomics, and the
//                        result does not depend on the number of threads)
//   score_all_backward   gradients of (B, N) all-candidate scores (1vsAll, KvsAll) for the queries and
//                        the candidates: candidate rows split over threads, each thread adding its
//                        query gradients into its own buffer, so no (B, N, width) tensor and no atomics
//   score_mutated        (B, 1 + K) scores against EMU-mutated candidates: column 0 of ids is the
//                        positive; each coordinate of a negative is kept with probability levels / 2^16
//                        and otherwise copied from the positive. The mask bits are a hash of (seeds,
//                        position), recomputed in the backward instead of stored; each coordinate is
//                        hashed, blended and scored (or differentiated) in one loop.
//   score_mutated_backward
//
// score_each scores four pairs of a row at a time (common.h's score_four).

#include <torch/library.h>

#include "common.h"

namespace kgexp {
namespace {

// The gradients of one pair: out_c += coef * d score / d candidate, out_q += coef * d score / d query.
// For the distance scorers d/dq = -d/dc. Subgradient 0 where a distance or modulus is 0.
template <int64_t KIND>
inline void add_pair_grads(const float* __restrict__ q, const float* __restrict__ c, int64_t width, float coef,
                           float* __restrict__ out_c, float* __restrict__ out_q) {
  if constexpr (KIND == DOT) {
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) {
      out_c[j] += coef * q[j];
      out_q[j] += coef * c[j];
    }
  } else if constexpr (KIND == L1) {
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) {
      const float d = q[j] - c[j];
      const float step = coef * static_cast<float>((d > 0.0f) - (d < 0.0f));
      out_c[j] += step;
      out_q[j] -= step;
    }
  } else if constexpr (KIND == L2) {
    float norm = 0.0f;
#pragma omp simd reduction(+ : norm)
    for (int64_t j = 0; j < width; ++j) {
      const float d = q[j] - c[j];
      norm += d * d;
    }
    norm = std::sqrt(norm);
    if (norm == 0.0f) return;
    const float scale = coef / norm;
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) {
      const float step = scale * (q[j] - c[j]);
      out_c[j] += step;
      out_q[j] -= step;
    }
  } else {
    const int64_t half = width / 2;
#pragma omp simd
    for (int64_t j = 0; j < half; ++j) {
      const float re = q[j] - c[j], im = q[j + half] - c[j + half];
      const float modulus = std::sqrt(re * re + im * im);
      const float scale = modulus > 0.0f ? coef / modulus : 0.0f;  // vectorised with -fno-trapping-math
      out_c[j] += scale * re;
      out_c[j + half] += scale * im;
      out_q[j] -= scale * re;
      out_q[j + half] -= scale * im;
    }
  }
}

// The EMU mask: bit (pair, j) is True when the low 16 bits of mix32(key(pair) ^ j) are below `levels`,
// where key(pair) hashes the pair index (b * (1 + K) + k) with the step's two seeds. mix32 is lowbias32
// (C. Wellons). kernels.mutation_keep computes the same bits with tensor ops.
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

struct Mask {
  uint32_t seed_a, seed_b, levels;
  bool shared;  // one bit per complex coordinate: j and j + width / 2 share it
};

// One (query, negative) pair's mask: kept(j) is whether mask bit j keeps the candidate's coordinate (else
// the positive's is copied). With SHARED, coordinate j + width / 2 reads bit j.
template <bool SHARED>
struct PairMask {
  uint32_t key, levels, half;

  PairMask(const Mask& mask, uint64_t pair, int64_t width)
      : key(mix32(mix32(static_cast<uint32_t>(pair) ^ mask.seed_a) ^ static_cast<uint32_t>(pair >> 32) ^
                  mask.seed_b)),
        levels(mask.levels),
        half(static_cast<uint32_t>(width / 2)) {}

  inline bool kept(uint32_t j) const {
    if constexpr (SHARED) j = j >= half ? j - half : j;
    return (mix32(key ^ j) & 0xffffU) < levels;
  }
};

// Calls body with std::true_type when the mask is shared between complex halves, else std::false_type.
template <typename F>
void dispatch_shared(bool shared, F&& body) {
  if (shared) {
    body(std::true_type{});
  } else {
    body(std::false_type{});
  }
}

// A mutated coordinate: the candidate's where the mask keeps it, else the positive's. Both are passed by
// value, so both rows are read unconditionally and the select is a blend of two plain loads (a
// conditional read compiles to a masked load, several times slower on AMD cores).
inline float blend(bool kept, float own, float copied) { return kept ? own : copied; }

// The score of a query against a mutated candidate, hashing, blending and scoring each coordinate in one
// loop without building the mutated row. 32-bit lanes throughout.
template <int64_t KIND, bool SHARED>
inline float score_mutated_row(const PairMask<SHARED>& mask, const float* __restrict__ q, const float* __restrict__ c,
                               const float* __restrict__ positive, int64_t width, float gamma) {
  const uint32_t n = static_cast<uint32_t>(width);
  float acc = 0.0f;
  if constexpr (KIND == MODULUS) {
    const uint32_t half = n / 2;
#pragma omp simd reduction(+ : acc)
    for (uint32_t j = 0; j < half; ++j) {
      const float re = q[j] - blend(mask.kept(j), c[j], positive[j]);
      const float im = q[j + half] - blend(mask.kept(j + half), c[j + half], positive[j + half]);
      acc += std::sqrt(re * re + im * im);
    }
    return gamma - acc;
  } else {
#pragma omp simd reduction(+ : acc)
    for (uint32_t j = 0; j < n; ++j) {
      const float m = blend(mask.kept(j), c[j], positive[j]);
      if constexpr (KIND == DOT) {
        acc += q[j] * m;
      } else if constexpr (KIND == L1) {
        acc += std::abs(q[j] - m);
      } else {
        const float d = q[j] - m;
        acc += d * d;
      }
    }
    if constexpr (KIND == DOT) return acc;
    if constexpr (KIND == L1) return gamma - acc;
    return gamma - std::sqrt(acc);
  }
}

// The gradients of one mutated pair, in one loop for the scorers whose coordinates are independent (L2
// first sums its norm): d score / d mutated goes to the candidate's row where the mask keeps it
// (out_c) and to the positive's where it copies (out_p); out_q gets the query's. As add_pair_grads:
// subgradient 0 where a distance or modulus is 0.
template <int64_t KIND, bool SHARED>
inline void add_mutated_pair_grads(const PairMask<SHARED>& mask, const float* __restrict__ q, const float* __restrict__ c,
                                   const float* __restrict__ positive, int64_t width, float coef,
                                   float* __restrict__ out_c, float* __restrict__ out_p, float* __restrict__ out_q) {
  const uint32_t n = static_cast<uint32_t>(width);
  auto route = [&](uint32_t j, bool kept, float step) {  // d score / d mutated_j = step
    out_c[j] += kept ? step : 0.0f;
    out_p[j] += kept ? 0.0f : step;
  };
  if constexpr (KIND == DOT) {
#pragma omp simd
    for (uint32_t j = 0; j < n; ++j) {
      const bool kept = mask.kept(j);
      route(j, kept, coef * q[j]);
      out_q[j] += coef * blend(kept, c[j], positive[j]);
    }
  } else if constexpr (KIND == L1) {
#pragma omp simd
    for (uint32_t j = 0; j < n; ++j) {
      const bool kept = mask.kept(j);
      const float d = q[j] - blend(kept, c[j], positive[j]);
      const float step = coef * static_cast<float>((d > 0.0f) - (d < 0.0f));
      route(j, kept, step);
      out_q[j] -= step;
    }
  } else if constexpr (KIND == L2) {
    float norm = 0.0f;
#pragma omp simd reduction(+ : norm)
    for (uint32_t j = 0; j < n; ++j) {
      const float d = q[j] - blend(mask.kept(j), c[j], positive[j]);
      norm += d * d;
    }
    norm = std::sqrt(norm);
    if (norm == 0.0f) return;
    const float scale = coef / norm;
#pragma omp simd
    for (uint32_t j = 0; j < n; ++j) {
      const bool kept = mask.kept(j);
      const float step = scale * (q[j] - blend(kept, c[j], positive[j]));
      route(j, kept, step);
      out_q[j] -= step;
    }
  } else {
    const uint32_t half = n / 2;
#pragma omp simd
    for (uint32_t j = 0; j < half; ++j) {
      const bool kept_re = mask.kept(j), kept_im = mask.kept(j + half);
      const float re = q[j] - blend(kept_re, c[j], positive[j]);
      const float im = q[j + half] - blend(kept_im, c[j + half], positive[j + half]);
      const float modulus = std::sqrt(re * re + im * im);
      const float scale = modulus > 0.0f ? coef / modulus : 0.0f;  // vectorised with -fno-trapping-math
      route(j, kept_re, scale * re);
      route(j + half, kept_im, scale * im);
      out_q[j] -= scale * re;
      out_q[j + half] -= scale * im;
    }
  }
}

void check_ids(const at::Tensor& ids, int64_t rows, int64_t batch) {
  TORCH_CHECK(ids.scalar_type() == at::kLong && ids.dim() == 2 && ids.size(0) == batch,
              "kgexp kernels: ids must be an int64 (B, K) tensor");
  if (ids.numel() > 0) {
    TORCH_CHECK(ids.min().item<int64_t>() >= 0 && ids.max().item<int64_t>() < rows,
                "kgexp kernels: candidate ids out of range [0, ", rows, ")");
  }
}

// The (query, candidate) pairs grouped by candidate row, by a stable counting sort: ``order`` lists pair
// indices (b * K + i) row by row, ``offsets[r]:offsets[r + 1]`` are those of row r.
std::tuple<at::Tensor, at::Tensor> group_by_row(const at::Tensor& ids, int64_t rows) {
  const int64_t total = ids.numel();
  auto offsets = at::zeros({rows + 1}, ids.options());
  auto order = at::empty({total}, ids.options());
  const int64_t* id = ids.data_ptr<int64_t>();
  int64_t* off = offsets.data_ptr<int64_t>();
  int64_t* ord = order.data_ptr<int64_t>();
  for (int64_t p = 0; p < total; ++p) ++off[id[p] + 1];
  for (int64_t r = 0; r < rows; ++r) off[r + 1] += off[r];
  std::vector<int64_t> cursor(off, off + rows);
  for (int64_t p = 0; p < total; ++p) ord[cursor[id[p]]++] = p;
  return {order, offsets};
}

// Both passes walk the table row by row (each row read once, in memory order) and visit that row's
// pairs; the queries, far smaller than the table, are the randomly accessed side.
std::tuple<at::Tensor, at::Tensor, at::Tensor> score_each(const at::Tensor& queries_in, const at::Tensor& table_in,
                                                          const at::Tensor& ids_in, int64_t kind, double gamma) {
  check_inputs(queries_in, table_in);
  const auto queries = queries_in.contiguous(), table = table_in.contiguous(), ids = ids_in.contiguous();
  const int64_t batch = queries.size(0), width = queries.size(1), count = ids.size(1), rows = table.size(0);
  check_ids(ids, rows, batch);
  auto [order, offsets] = group_by_row(ids, rows);
  auto scores = at::empty({batch, count}, queries.options());
  const float* q = queries.data_ptr<float>();
  const float* t = table.data_ptr<float>();
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  float* out = scores.data_ptr<float>();
  dispatch_kind(kind, [&](auto k) {
    constexpr int64_t KIND = decltype(k)::value;
    at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const float* c = t + r * width;
        const float* same[4] = {c, c, c, c};
        int64_t s = off[r];
        for (; s + 4 <= off[r + 1]; s += 4) {
          const float* four[4];
          for (int u = 0; u < 4; ++u) four[u] = q + (ord[s + u] / count) * width;
          float scores4[4];
          score_four<KIND>(four, same, width, (float)gamma, scores4);
          for (int u = 0; u < 4; ++u) out[ord[s + u]] = scores4[u];
        }
        for (; s < off[r + 1]; ++s) {
          const int64_t p = ord[s];
          out[p] = score_row<KIND>(q + (p / count) * width, c, width, (float)gamma);
        }
      }
    });
  });
  return {scores, order, offsets};
}

// The backward walk shared by both scorers: table rows in order, each row's gradient zeroed and then
// written by one thread; pair(kind, thread, candidate row, its gradient, p, b, coef) adds one pair's.
// The score gradients are first gathered into the walk's order, in one pass that keeps many loads in
// flight, so that the walk reads its coefficients in sequence rather than one cache miss at a time.
template <typename Pair>
void backward_by_row(int64_t kind, int64_t rows, int64_t width, int64_t count, const float* t,
                     const at::Tensor& grad, const at::Tensor& order, const at::Tensor& offsets, float* gt,
                     Pair&& pair) {
  const auto in_order = grad.view({-1}).index_select(0, order);
  const float* g = in_order.data_ptr<float>();
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  dispatch_kind(kind, [&](auto k) {
    at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
      const int64_t thread = at::get_thread_num();
      for (int64_t r = begin; r < end; ++r) {
        const float* c = t + r * width;
        float* out = gt + r * width;
        std::fill(out, out + width, 0.0f);
        for (int64_t s = off[r]; s < off[r + 1]; ++s) {
          const float coef = g[s];
          if (coef != 0.0f) pair(k, thread, c, out, ord[s], ord[s] / count, coef);
        }
      }
    });
  });
}

std::tuple<at::Tensor, at::Tensor> score_each_backward(const at::Tensor& grad_in, const at::Tensor& queries_in,
                                                       const at::Tensor& table_in, const at::Tensor& order,
                                                       const at::Tensor& offsets, int64_t kind) {
  check_inputs(queries_in, table_in);
  const auto queries = queries_in.contiguous(), table = table_in.contiguous();
  const auto grad = grad_in.contiguous().to(at::kFloat);
  const int64_t batch = queries.size(0), width = queries.size(1), rows = table.size(0);
  const int64_t count = batch > 0 ? grad.numel() / batch : 0;
  // Each thread adds its pairs' query gradients into its own buffer; the buffers are summed at the end.
  auto partial = at::zeros({at::get_num_threads(), batch, width}, queries.options());
  auto grad_table = at::empty_like(table);
  const float* q = queries.data_ptr<float>();
  float* gp = partial.data_ptr<float>();
  backward_by_row(kind, rows, width, count, table.data_ptr<float>(), grad, order, offsets,
                  grad_table.data_ptr<float>(),
                  [&](auto k, int64_t thread, const float* c, float* out, int64_t, int64_t b, float coef) {
                    constexpr int64_t KIND = decltype(k)::value;
                    float* gq = gp + (thread * batch + b) * width;
                    add_pair_grads<KIND>(q + b * width, c, width, coef, out, gq);
                  });
  return {partial.sum(0), grad_table};
}

std::tuple<at::Tensor, at::Tensor> score_all_backward(const at::Tensor& grad_in, const at::Tensor& queries_in,
                                                      const at::Tensor& table_in, int64_t kind) {
  check_inputs(queries_in, table_in);
  const auto queries = queries_in.contiguous(), table = table_in.contiguous();
  const auto grad = grad_in.to(at::kFloat).t().contiguous();  // (N, B): a candidate's coefficients in a row
  const int64_t batch = queries.size(0), width = queries.size(1), rows = table.size(0);
  auto partial = at::zeros({at::get_num_threads(), batch, width}, queries.options());
  auto grad_table = at::zeros_like(table);
  const float *q = queries.data_ptr<float>(), *t = table.data_ptr<float>(), *g = grad.data_ptr<float>();
  float *gp = partial.data_ptr<float>(), *gt = grad_table.data_ptr<float>();
  dispatch_kind(kind, [&](auto k) {
    constexpr int64_t KIND = decltype(k)::value;
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      float* gq = gp + at::get_thread_num() * batch * width;
      for (int64_t r = begin; r < end; ++r) {
        const float* c = t + r * width;
        const float* coefs = g + r * batch;
        for (int64_t b = 0; b < batch; ++b) {
          if (coefs[b] != 0.0f) add_pair_grads<KIND>(q + b * width, c, width, coefs[b], gt + r * width, gq + b * width);
        }
      }
    });
  });
  return {partial.sum(0), grad_table};
}

// EMU: scores of queries against mutated candidates. ids: (B, 1 + K), column 0 the positive, which is
// scored unmutated.
std::tuple<at::Tensor, at::Tensor, at::Tensor> score_mutated(const at::Tensor& queries_in, const at::Tensor& table_in,
                                                             const at::Tensor& ids_in, int64_t kind, double gamma,
                                                             int64_t seed_a, int64_t seed_b, int64_t levels,
                                                             bool shared) {
  check_inputs(queries_in, table_in);
  const auto queries = queries_in.contiguous(), table = table_in.contiguous(), ids = ids_in.contiguous();
  const int64_t batch = queries.size(0), width = queries.size(1), count = ids.size(1), rows = table.size(0);
  check_ids(ids, rows, batch);
  TORCH_CHECK(count >= 1, "kgexp kernels: score_mutated needs the positive in column 0");
  const Mask mask{static_cast<uint32_t>(seed_a), static_cast<uint32_t>(seed_b), static_cast<uint32_t>(levels), shared};
  auto [order, offsets] = group_by_row(ids, rows);
  auto scores = at::empty({batch, count}, queries.options());
  // Each query beside its positive in one (B, 2 width) block, as compact as the queries (unlike the
  // positives' table rows): a pair reads its two rows from one place.
  const auto beside = at::cat({queries, table.index_select(0, ids.select(1, 0))}, 1);
  const float* qp = beside.data_ptr<float>();
  const float* t = table.data_ptr<float>();
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  float* out = scores.data_ptr<float>();
  dispatch_kind(kind, [&](auto k) {
    dispatch_shared(shared, [&](auto sh) {
      constexpr int64_t KIND = decltype(k)::value;
      constexpr bool SHARED = decltype(sh)::value;
      at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const float* c = t + r * width;
          for (int64_t s = off[r]; s < off[r + 1]; ++s) {
            const int64_t p = ord[s];
            const float* q = qp + (p / count) * 2 * width;
            out[p] = p % count == 0 ? score_row<KIND>(q, c, width, (float)gamma)
                                    : score_mutated_row<KIND>(PairMask<SHARED>(mask, p, width), q, c, q + width,
                                                              width, (float)gamma);
          }
        }
      });
    });
  });
  return {scores, order, offsets};
}

std::tuple<at::Tensor, at::Tensor> score_mutated_backward(const at::Tensor& grad_in, const at::Tensor& queries_in,
                                                          const at::Tensor& table_in, const at::Tensor& ids_in,
                                                          const at::Tensor& order, const at::Tensor& offsets,
                                                          int64_t kind, int64_t seed_a, int64_t seed_b,
                                                          int64_t levels, bool shared) {
  check_inputs(queries_in, table_in);
  const auto queries = queries_in.contiguous(), table = table_in.contiguous(), ids = ids_in.contiguous();
  const auto grad = grad_in.contiguous().to(at::kFloat);
  const int64_t batch = queries.size(0), width = queries.size(1), rows = table.size(0), count = ids.size(1);
  const Mask mask{static_cast<uint32_t>(seed_a), static_cast<uint32_t>(seed_b), static_cast<uint32_t>(levels), shared};
  // Per thread: the queries' gradients and the gradients of the positives' copied coordinates.
  const int64_t threads = at::get_num_threads();
  auto partial = at::zeros({2, threads, batch, width}, queries.options());
  auto grad_table = at::empty_like(table);
  const auto beside = at::cat({queries, table.index_select(0, ids.select(1, 0))}, 1);  // as in the forward
  const float* qp = beside.data_ptr<float>();
  float* gp = partial.data_ptr<float>();
  dispatch_shared(shared, [&](auto sh) {
    constexpr bool SHARED = decltype(sh)::value;
    backward_by_row(
        kind, rows, width, count, table.data_ptr<float>(), grad, order, offsets,
        grad_table.data_ptr<float>(),
        [&](auto k, int64_t thread, const float* c, float* out, int64_t p, int64_t b, float coef) {
          constexpr int64_t KIND = decltype(k)::value;
          const float* q = qp + b * 2 * width;
          float* gq = gp + (thread * batch + b) * width;
          if (p % count == 0) {  // the positive, unmutated
            add_pair_grads<KIND>(q, c, width, coef, out, gq);
            return;
          }
          float* to_positive = gp + ((threads + thread) * batch + b) * width;
          add_mutated_pair_grads<KIND>(PairMask<SHARED>(mask, p, width), q, c, q + width, width, coef, out,
                                       to_positive, gq);
        });
  });
  auto sums = partial.sum(1);  // (2, batch, width)
  grad_table.index_add_(0, ids.select(1, 0), sums[1]);  // copied coordinates train the positives
  return {sums[0], grad_table};
}

}  // namespace
}  // namespace kgexp
TORCH_LIBRARY_FRAGMENT(kgexp, m) {
  m.def("score_each(Tensor queries, Tensor table, Tensor ids, int kind, float gamma) -> (Tensor, Tensor, Tensor)");
  m.def("score_each_backward(Tensor grad, Tensor queries, Tensor table, Tensor order, Tensor offsets, int kind) -> (Tensor, Tensor)");
  m.def("score_all_backward(Tensor grad, Tensor queries, Tensor table, int kind) -> (Tensor, Tensor)");
  m.def("score_mutated(Tensor queries, Tensor table, Tensor ids, int kind, float gamma, int seed_a, int seed_b, int levels, bool shared) -> (Tensor, Tensor, Tensor)");
  m.def("score_mutated_backward(Tensor grad, Tensor queries, Tensor table, Tensor ids, Tensor order, Tensor offsets, int kind, int seed_a, int seed_b, int levels, bool shared) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kgexp, CPU, m) {
  m.impl("score_each", &kgexp::score_each);
  m.impl("score_each_backward", &kgexp::score_each_backward);
  m.impl("score_all_backward", &kgexp::score_all_backward);
  m.impl("score_mutated", &kgexp::score_mutated);
  m.impl("score_mutated_backward", &kgexp::score_mutated_backward);
}
