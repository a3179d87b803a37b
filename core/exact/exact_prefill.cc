// File: core/exact/exact_prefill.cc
//
// The blocked (GEMM) causal prefill of exact_prefill.h. Eigen supplies the
// two matrix products per (query block, key block) pair; everything else
// (mask, block softmax, double-precision merge) is a loop over the S tile,
// O(Bq·g·Bk) per pair against the GEMMs' O(Bq·g·Bk·(d + dv)).
#include "core/exact/exact_prefill.h"

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "core/util/half.h"

namespace kvsketch {
namespace {

using RowMatrixF =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMapF = Eigen::Map<const RowMatrixF>;
using MapF = Eigen::Map<RowMatrixF>;

// A run of at most kPrefillKeyBlock tokens inside one storage chunk.
struct KeySpan {
  const void* keys = nullptr;    // first key row, of the store's element type
  const void* values = nullptr;  // first value row
  int64_t start = 0;             // global index of the first token
  int rows = 0;
};

std::vector<KeySpan> CutKeySpans(StoreType store,
                                 absl::Span<const KvBlock> blocks, int d,
                                 int dv) {
  const int64_t elem = StoreElementBytes(store);
  std::vector<KeySpan> spans;
  int64_t base = 0;
  for (const KvBlock& b : blocks) {
    const char* k = static_cast<const char*>(b.keys);
    const char* v = static_cast<const char*>(b.values);
    for (int64_t s = 0; s < b.rows; s += kPrefillKeyBlock) {
      const int rows =
          static_cast<int>(std::min<int64_t>(kPrefillKeyBlock, b.rows - s));
      spans.push_back({k + s * d * elem, v + s * dv * elem, base + s, rows});
    }
    base += b.rows;
  }
  return spans;
}

// Returns `count` stored elements as floats: the data itself for an f32
// cache, else widened into `scratch` (one block at a time, so the cache
// keeps its half-size footprint).
using ScratchF = std::vector<float, Eigen::aligned_allocator<float>>;

const float* AsFloat(StoreType store, const void* data, int64_t count,
                     ScratchF& scratch) {
  switch (store) {
    case StoreType::kF32:
      return static_cast<const float*>(data);
    case StoreType::kF16:
      HalfToFloatN(static_cast<const uint16_t*>(data), scratch.data(),
                   static_cast<size_t>(count));
      return scratch.data();
    case StoreType::kBf16:
      Bf16ToFloatN(static_cast<const uint16_t*>(data), scratch.data(),
                   static_cast<size_t>(count));
      return scratch.data();
  }
  return nullptr;
}

struct Problem {
  StoreType store;
  const float* q;
  int group;
  int64_t t_new;
  int64_t n_prev;
  int d;
  int dv;
  float scale;
  std::vector<KeySpan> spans;
  int64_t positions_per_block;  // Bq: positions per query block
  float* out;
};

// Per-thread buffers, sized once for the largest block.
class Worker {
 public:
  explicit Worker(const Problem& p) : p_(p) {
    const int64_t rows = p.positions_per_block * p.group;
    q_.resize(static_cast<size_t>(rows * p.d));
    s_.resize(static_cast<size_t>(rows * kPrefillKeyBlock));
    o_.resize(static_cast<size_t>(rows * p.dv));
    if (p.store != StoreType::kF32) {
      kf_.resize(static_cast<size_t>(kPrefillKeyBlock) * p.d);
      vf_.resize(static_cast<size_t>(kPrefillKeyBlock) * p.dv);
    }
    acc_.resize(static_cast<size_t>(rows * p.dv));
    run_max_.resize(static_cast<size_t>(rows));
    run_sum_.resize(static_cast<size_t>(rows));
    visible_.resize(static_cast<size_t>(rows));
    block_max_.resize(static_cast<size_t>(rows));
    block_sum_.resize(static_cast<size_t>(rows));
  }

  // Positions [p0, p0 + np) of every head of the group.
  void Run(int64_t p0, int64_t np) {
    const int g = p_.group;
    const int d = p_.d;
    const int dv = p_.dv;
    const int64_t rows = np * g;
    // Stack the heads' rows (row h·np + i is head h, position p0 + i) and
    // fold the scale into Q once instead of into every score.
    for (int h = 0; h < g; ++h) {
      for (int64_t i = 0; i < np; ++i) {
        const float* src = p_.q + (h * p_.t_new + p0 + i) * d;
        float* dst = q_.data() + (h * np + i) * d;
        for (int c = 0; c < d; ++c) dst[c] = src[c] * p_.scale;
      }
    }
    std::fill(acc_.begin(), acc_.begin() + rows * dv, 0.0);
    std::fill(run_max_.begin(), run_max_.begin() + rows,
              -std::numeric_limits<double>::infinity());
    std::fill(run_sum_.begin(), run_sum_.begin() + rows, 0.0);
    // Row i of every head sees tokens [0, n_prev + p0 + i].
    const int64_t first_limit = p_.n_prev + p0 + 1;
    const int64_t last_limit = p_.n_prev + p0 + np;
    const ConstMapF qm(q_.data(), rows, d);
    for (const KeySpan& span : p_.spans) {
      if (span.start >= last_limit) break;
      // Keys at or past the block's last limit are masked for every row.
      const int nb = static_cast<int>(
          std::min<int64_t>(span.rows, last_limit - span.start));
      const bool diagonal = span.start + nb > first_limit;
      const ConstMapF km(AsFloat(p_.store, span.keys, int64_t{nb} * d, kf_), nb,
                         d);
      MapF sm(s_.data(), rows, nb);
      sm.noalias() = qm * km.transpose();
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t limit = first_limit + r % np;
        visible_[r] = diagonal ? static_cast<int>(std::clamp<int64_t>(
                                     limit - span.start, 0, nb))
                               : nb;
        BlockSoftmax(s_.data() + r * nb, nb, visible_[r], r);
      }
      const ConstMapF vm(AsFloat(p_.store, span.values, int64_t{nb} * dv, vf_),
                         nb, dv);
      MapF om(o_.data(), rows, dv);
      om.noalias() = sm * vm;
      Merge(rows);
    }
    for (int h = 0; h < g; ++h) {
      for (int64_t i = 0; i < np; ++i) {
        const int64_t r = h * np + i;
        const double inv = 1.0 / run_sum_[r];
        const double* a = acc_.data() + r * dv;
        float* dst = p_.out + (h * p_.t_new + p0 + i) * dv;
        for (int c = 0; c < dv; ++c) dst[c] = static_cast<float>(a[c] * inv);
      }
    }
  }

 private:
  // Turns scores s[0, nb) of row r into P = exp(s - block max) over the
  // first `visible` keys and 0 after them; records the block max and sum.
  void BlockSoftmax(float* s, int nb, int visible, int64_t r) {
    if (visible == 0) {
      std::fill(s, s + nb, 0.0f);
      block_max_[r] = -std::numeric_limits<float>::infinity();
      block_sum_[r] = 0;
      return;
    }
    // Eigen's reductions are vectorised (a plain float max/sum loop is not,
    // without -ffast-math): with scalar loops here the whole prefill ran at
    // 54 GFLOP/s instead of 75 (T = 4K-16K, d = dv = 128, one core).
    Eigen::Map<Eigen::ArrayXf> row(s, visible);
    const float mx = row.maxCoeff();
    row -= mx;
    ExpNonPositive(s, s, visible);
    std::fill(s + visible, s + nb, 0.0f);
    block_max_[r] = mx;
    block_sum_[r] = row.sum();
  }

  // Folds the block's (max, sum, P·V) into the running triple of each row.
  void Merge(int64_t rows) {
    const int dv = p_.dv;
    for (int64_t r = 0; r < rows; ++r) {
      if (visible_[r] == 0) continue;
      const double new_max = std::max(run_max_[r], double{block_max_[r]});
      const double old_w = std::exp(run_max_[r] - new_max);  // 0 at first
      const double blk_w = std::exp(double{block_max_[r]} - new_max);
      run_sum_[r] = run_sum_[r] * old_w + block_sum_[r] * blk_w;
      double* a = acc_.data() + r * dv;
      const float* b = o_.data() + r * dv;
      if (old_w == 1.0) {
        for (int c = 0; c < dv; ++c) a[c] += blk_w * b[c];
      } else {
        for (int c = 0; c < dv; ++c) a[c] = a[c] * old_w + blk_w * b[c];
      }
      run_max_[r] = new_max;
    }
  }

  const Problem& p_;
  // Aligned to EIGEN_MAX_ALIGN_BYTES: Eigen's vectorised reductions peel
  // scalar terms up to the first aligned element, so with malloc's alignment
  // the block sums (and the output bits) would depend on where a thread's
  // buffer landed. Aligned, the result is a function of the inputs only.
  ScratchF q_, s_, o_, kf_, vf_;
  std::vector<double> acc_, run_max_, run_sum_;
  // Per row of the current key block: keys it sees, and its block softmax
  // max and sum (float, like the block itself).
  std::vector<int> visible_;
  std::vector<float> block_max_, block_sum_;
};

}  // namespace

void ExactPrefillAttention(StoreType store, const float* q, int group,
                           int64_t t_new, int64_t n_prev, int d, int dv,
                           float scale, absl::Span<const KvBlock> blocks,
                           float* out, int threads) {
  if (t_new == 0) return;
  Problem p{store,
            q,
            group,
            t_new,
            n_prev,
            d,
            dv,
            scale,
            CutKeySpans(store, blocks, d, dv),
            std::max<int64_t>(1, kPrefillQueryRows / group),
            out};
  p.positions_per_block = std::min(p.positions_per_block, t_new);
  const int64_t num_blocks =
      (t_new + p.positions_per_block - 1) / p.positions_per_block;
  // Later query blocks see more keys: hand them out last-first so the
  // threads finish together.
  std::atomic<int64_t> next{0};
  auto work = [&p, &next, num_blocks, t_new] {
    Worker w(p);
    for (int64_t b; (b = next.fetch_add(1)) < num_blocks;) {
      const int64_t p0 = (num_blocks - 1 - b) * p.positions_per_block;
      w.Run(p0, std::min(p.positions_per_block, t_new - p0));
    }
  };
  const int n_threads =
      static_cast<int>(std::min<int64_t>(std::max(threads, 1), num_blocks));
  std::vector<std::thread> pool;
  pool.reserve(n_threads - 1);
  for (int i = 1; i < n_threads; ++i) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
}

}  // namespace kvsketch
