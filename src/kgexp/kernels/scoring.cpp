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
//   score_mutated        (B, 1 + K) scores against EMU-mutated candidates: column 0 of ids is the
//                        positive; each coordinate of a negative is kept with probability levels / 2^16
//                        and otherwise copied from the positive. The mask bits are a hash of (seeds,
//                        position), recomputed in the backward instead of stored.
//   score_mutated_backward
//   rank_counts          per row of a (B, N) score block, the candidates scoring better than the target
//                        and those scoring better or equal, minus the filtered known answers (one pass)
//   score_all            (B, N) scores of queries against every table row, tiled for the caches (for
//                        the distance scorers; the bilinear ones use a matmul)
//
// Scorers (`kind`): 0 dot product, 1 gamma - L1 distance, 2 gamma - L2 distance, 3 gamma - sum of complex
// moduli of the difference (RotatE; rows are [re | im] halves).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

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

void check_inputs(const at::Tensor& queries, const at::Tensor& table) {
  TORCH_CHECK(queries.device().is_cpu() && table.device().is_cpu(), "kgexp kernels run on CPU tensors");
  TORCH_CHECK(queries.scalar_type() == at::kFloat && table.scalar_type() == at::kFloat,
              "kgexp kernels take float32 queries and tables");
  TORCH_CHECK(queries.dim() == 2 && table.dim() == 2 && queries.size(1) == table.size(1),
              "kgexp kernels: queries (B, width) and table (N, width) must have the same width");
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
        for (int64_t s = off[r]; s < off[r + 1]; ++s) {
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
      std::vector<float> mutated(width), keep(width);
      for (int64_t r = begin; r < end; ++r) {
        const float* c = t + r * width;
        for (int64_t s = off[r]; s < off[r + 1]; ++s) {
          const int64_t p = ord[s], b = p / count;
          const float* row = c;
          if (p % count != 0) {
            mutate_row(mask, p, c, pos + b * width, width, mutated.data(), keep.data());
            row = mutated.data();
          }
          out[p] = score_row<KIND>(q + b * width, row, width, (float)gamma);
        }
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

at::Tensor score_all(const at::Tensor& queries_in, const at::Tensor& table_in, int64_t kind, double gamma) {
  check_inputs(queries_in, table_in);
  const auto queries = queries_in.contiguous(), table = table_in.contiguous();
  const int64_t batch = queries.size(0), width = queries.size(1), rows = table.size(0);
  auto scores = at::empty({batch, rows}, queries.options());
  const float* q = queries.data_ptr<float>();
  const float* t = table.data_ptr<float>();
  float* out = scores.data_ptr<float>();
  // A block of queries against a tile of table rows, both sized to stay in the L2 cache, so the table
  // is streamed from memory once per query block rather than once per query.
  const int64_t block_floats = 24 * 1024;  // 96 KiB of queries, 96 KiB of table rows
  const int64_t query_block = std::max<int64_t>(1, block_floats / std::max<int64_t>(1, width));
  const int64_t tile = query_block;
  dispatch_kind(kind, [&](auto k) {
    constexpr int64_t KIND = decltype(k)::value;
    const int64_t blocks = (batch + query_block - 1) / query_block;
    const int64_t tiles = (rows + tile - 1) / tile;
    // Work items are (query block, table tile) pairs, so both cores stay busy for small batches too.
    at::parallel_for(0, blocks * tiles, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b0 = (item / tiles) * query_block, r0 = (item % tiles) * tile;
        const int64_t b1 = std::min(batch, b0 + query_block), r1 = std::min(rows, r0 + tile);
        for (int64_t b = b0; b < b1; ++b) {
          const float* qb = q + b * width;
          float* row_out = out + b * rows;
          for (int64_t r = r0; r < r1; ++r) row_out[r] = score_row<KIND>(qb, t + r * width, width, (float)gamma);
        }
      }
    });
  });
  return scores;
}

// Filtered rank counts of targets[b] in row b of a (B, N) score block: better = !(s <= t) (NaN scores, or
// a NaN target, count as better), tied = (s == t). The target counts as tied with itself; filtered
// (row, col) pairs other than the target are removed from both counts. The block may be row-major or
// the transpose of a row-major (N, B) matrix (what a matmul of entities by queries gives); the second is
// counted row by row of the (N, B) matrix, vectorised over the queries.
std::tuple<at::Tensor, at::Tensor> rank_counts(const at::Tensor& scores_in, const at::Tensor& targets_in,
                                               const at::Tensor& filter_rows_in, const at::Tensor& filter_cols_in) {
  TORCH_CHECK(scores_in.device().is_cpu() && scores_in.scalar_type() == at::kFloat && scores_in.dim() == 2,
              "kgexp kernels: rank_counts takes a float32 (B, N) CPU score block");
  const int64_t batch = scores_in.size(0), count = scores_in.size(1);
  const bool transposed = batch > 1 && scores_in.stride(0) == 1 && scores_in.stride(1) == batch;
  const auto scores = transposed ? scores_in : scores_in.contiguous();
  const int64_t row_stride = transposed ? 1 : count, col_stride = transposed ? batch : 1;
  const auto targets = targets_in.contiguous();
  const auto filter_rows = filter_rows_in.contiguous(), filter_cols = filter_cols_in.contiguous();
  TORCH_CHECK(targets.numel() == batch, "kgexp kernels: one target per score row");
  const int64_t* target = targets.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(target[b] >= 0 && target[b] < count, "kgexp kernels: target out of range");
  }
  const float* s = scores.data_ptr<float>();
  auto score_at = [&](int64_t b, int64_t e) { return s[b * row_stride + e * col_stride]; };
  std::vector<float> t(batch);
  std::vector<int32_t> better(batch, 0), tied(batch, 0);
  for (int64_t b = 0; b < batch; ++b) t[b] = score_at(b, target[b]);
  if (transposed) {
    at::parallel_for(0, batch, 64, [&](int64_t begin, int64_t end) {
      for (int64_t e = 0; e < count; ++e) {
        const float* row = s + e * batch;
#pragma omp simd
        for (int64_t b = begin; b < end; ++b) {
          better[b] += !(row[b] <= t[b]);
          tied[b] += row[b] == t[b];
        }
      }
    });
  } else {
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const float* row = s + b * count;
        const float target_score = t[b];
        int32_t above = 0, equal = 0;
#pragma omp simd reduction(+ : above, equal)
        for (int64_t e = 0; e < count; ++e) {
          above += !(row[e] <= target_score);
          equal += row[e] == target_score;
        }
        better[b] = above;
        tied[b] = equal;
      }
    });
  }
  auto greater = at::empty({batch}, targets.options());
  auto greater_equal = at::empty({batch}, targets.options());
  int64_t* gt = greater.data_ptr<int64_t>();
  int64_t* ge = greater_equal.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    if (std::isnan(t[b])) {  // the target counted itself as better; it is tied with itself
      better[b] -= 1;
      tied[b] += 1;
    }
    gt[b] = better[b];
    ge[b] = static_cast<int64_t>(better[b]) + tied[b];
  }
  const int64_t* rows = filter_rows.data_ptr<int64_t>();
  const int64_t* cols = filter_cols.data_ptr<int64_t>();
  for (int64_t i = 0; i < filter_rows.numel(); ++i) {
    const int64_t b = rows[i], e = cols[i];
    if (e == target[b]) continue;
    const float v = score_at(b, e);
    if (!(v <= t[b])) {
      gt[b] -= 1;
      ge[b] -= 1;
    } else if (v == t[b]) {
      ge[b] -= 1;
    }
  }
  return {greater, greater_equal};
}

}  // namespace

TORCH_LIBRARY(kgexp, m) {
  m.def("score_each(Tensor queries, Tensor table, Tensor ids, int kind, float gamma) -> (Tensor, Tensor, Tensor)");
  m.def("score_each_backward(Tensor grad, Tensor queries, Tensor table, Tensor order, Tensor offsets, int kind) -> (Tensor, Tensor)");
  m.def("score_mutated(Tensor queries, Tensor table, Tensor ids, int kind, float gamma, int seed_a, int seed_b, int levels, bool shared) -> (Tensor, Tensor, Tensor)");
  m.def("score_mutated_backward(Tensor grad, Tensor queries, Tensor table, Tensor ids, Tensor order, Tensor offsets, int kind, int seed_a, int seed_b, int levels, bool shared) -> (Tensor, Tensor)");
  m.def("rank_counts(Tensor scores, Tensor targets, Tensor filter_rows, Tensor filter_cols) -> (Tensor, Tensor)");
  m.def("score_all(Tensor queries, Tensor table, int kind, float gamma) -> Tensor");
}

TORCH_LIBRARY_IMPL(kgexp, CPU, m) {
  m.impl("score_each", &score_each);
  m.impl("score_each_backward", &score_each_backward);
  m.impl("score_mutated", &score_mutated);
  m.impl("score_mutated_backward", &score_mutated_backward);
  m.impl("rank_counts", &rank_counts);
  m.impl("score_all", &score_all);
}
