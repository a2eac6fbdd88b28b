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
//                        position), recomputed in the backward instead of stored.
//   score_mutated_backward
//
// The forward passes score four pairs of a row at a time (common.h's score_four).

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

// The mutated candidate row (keep ? c : positive) and its keep flags, for one (query, negative) pair.
inline void mutate_row(const Mask& mask, uint64_t pair, const float* __restrict__ c,
                       const float* __restrict__ positive, int64_t width, float* __restrict__ mutated,
                       float* __restrict__ keep) {
  const int64_t mask_width = mask.shared ? width / 2 : width;
  const uint32_t key =
      mix32(mix32(static_cast<uint32_t>(pair) ^ mask.seed_a) ^ static_cast<uint32_t>(pair >> 32) ^ mask.seed_b);
  const uint32_t bits = static_cast<uint32_t>(mask_width);
#pragma omp simd
  for (uint32_t j = 0; j < bits; ++j) {  // 32-bit lanes throughout
    keep[j] = static_cast<float>((mix32(key ^ j) & 0xffffU) < mask.levels);
  }
  if (mask.shared) std::copy(keep, keep + mask_width, keep + mask_width);
#pragma omp simd
  for (int64_t j = 0; j < width; ++j) mutated[j] = keep[j] != 0.0f ? c[j] : positive[j];
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
template <typename Pair>
void backward_by_row(int64_t kind, int64_t rows, int64_t width, int64_t count, const float* t, const float* g,
                     const int64_t* off, const int64_t* ord, float* gt, Pair&& pair) {
  dispatch_kind(kind, [&](auto k) {
    at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
      const int64_t thread = at::get_thread_num();
      for (int64_t r = begin; r < end; ++r) {
        const float* c = t + r * width;
        float* out = gt + r * width;
        std::fill(out, out + width, 0.0f);
        for (int64_t s = off[r]; s < off[r + 1]; ++s) {
          const int64_t p = ord[s];
          const float coef = g[p];
          if (coef != 0.0f) pair(k, thread, c, out, p, p / count, coef);
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
  backward_by_row(kind, rows, width, count, table.data_ptr<float>(), grad.data_ptr<float>(),
                  offsets.data_ptr<int64_t>(), order.data_ptr<int64_t>(), grad_table.data_ptr<float>(),
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
  // The positives gathered into a (B, width) block: as compact as the queries, unlike their table rows.
  const auto positives = table.index_select(0, ids.select(1, 0));
  const float* q = queries.data_ptr<float>();
  const float* t = table.data_ptr<float>();
  const float* pos = positives.data_ptr<float>();
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  float* out = scores.data_ptr<float>();
  dispatch_kind(kind, [&](auto k) {
    constexpr int64_t KIND = decltype(k)::value;
    at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
      std::vector<float> mutated(4 * width), keep(width);
      const float* four_q[4];
      const float* four_c[4];
      int64_t slots[4];
      int64_t filled = 0;
      auto flush = [&]() {  // four pairs at once; a row's last ones one by one
        if (filled == 4) {
          float scores4[4];
          score_four<KIND>(four_q, four_c, width, (float)gamma, scores4);
          for (int u = 0; u < 4; ++u) out[slots[u]] = scores4[u];
        } else {
          for (int64_t u = 0; u < filled; ++u) out[slots[u]] = score_row<KIND>(four_q[u], four_c[u], width, (float)gamma);
        }
        filled = 0;
      };
      for (int64_t r = begin; r < end; ++r) {
        const float* c = t + r * width;
        for (int64_t s = off[r]; s < off[r + 1]; ++s) {
          const int64_t p = ord[s], b = p / count;
          const float* row = c;
          if (p % count != 0) {
            float* buffer = mutated.data() + filled * width;
            mutate_row(mask, p, c, pos + b * width, width, buffer, keep.data());
            row = buffer;
          }
          four_q[filled] = q + b * width, four_c[filled] = row, slots[filled] = p;
          if (++filled == 4) flush();
        }
        flush();
      }
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
  const auto positives = table.index_select(0, ids.select(1, 0));
  const float* q = queries.data_ptr<float>();
  const float* pos = positives.data_ptr<float>();
  float* gp = partial.data_ptr<float>();
  std::vector<std::vector<float>> scratch(threads, std::vector<float>(3 * width));  // mutated, keep, dm
  backward_by_row(
      kind, rows, width, count, table.data_ptr<float>(), grad.data_ptr<float>(), offsets.data_ptr<int64_t>(),
      order.data_ptr<int64_t>(), grad_table.data_ptr<float>(),
      [&](auto k, int64_t thread, const float* c, float* out, int64_t p, int64_t b, float coef) {
        constexpr int64_t KIND = decltype(k)::value;
        float* gq = gp + (thread * batch + b) * width;
        if (p % count == 0) {  // the positive, unmutated
          add_pair_grads<KIND>(q + b * width, c, width, coef, out, gq);
          return;
        }
        float* mutated = scratch[thread].data();
        float* keep = mutated + width;
        float* dm = keep + width;
        mutate_row(mask, p, c, pos + b * width, width, mutated, keep);
        std::fill(dm, dm + width, 0.0f);
        add_pair_grads<KIND>(q + b * width, mutated, width, coef, dm, gq);
        float* to_positive = gp + ((threads + thread) * batch + b) * width;
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) {
          out[j] += keep[j] * dm[j];
          to_positive[j] += (1.0f - keep[j]) * dm[j];
        }
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
