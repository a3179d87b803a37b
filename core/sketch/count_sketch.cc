// File: core/sketch/count_sketch.cc
#include "core/sketch/count_sketch.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kvsketch {
namespace {

// splitmix64 finaliser: a bijective 64-bit mixer.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

double Median(double* v, int n) {
  std::sort(v, v + n);
  return (n % 2 == 1) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

CountSketch::CountSketch(int rows, int buckets, uint64_t seed)
    : rows_(rows),
      buckets_(buckets),
      seed_(seed),
      table_(static_cast<size_t>(rows) * buckets, 0.0) {
  KVSKETCH_CHECK(rows >= 1 && buckets >= 1);
}

void CountSketch::Hash(int row, uint64_t index, int* bucket,
                       double* sign) const {
  const uint64_t h =
      Mix(Mix(seed_ ^ (static_cast<uint64_t>(row) << 48)) ^ index);
  // Low bit for the sign, the high 32 bits for the bucket (multiply-shift
  // into [0, buckets) without a modulo).
  *sign = (h & 1) ? 1.0 : -1.0;
  *bucket =
      static_cast<int>(((h >> 32) * static_cast<uint64_t>(buckets_)) >> 32);
}

void CountSketch::Add(uint64_t index, double value) {
  for (int i = 0; i < rows_; ++i) {
    int b = 0;
    double s = 0;
    Hash(i, index, &b, &s);
    table_[static_cast<size_t>(i) * buckets_ + b] += s * value;
  }
}

double CountSketch::Estimate(uint64_t index) const {
  double est[64];
  std::vector<double> heap_est;
  double* e = est;
  if (rows_ > 64) {
    heap_est.resize(rows_);
    e = heap_est.data();
  }
  for (int i = 0; i < rows_; ++i) {
    int b = 0;
    double s = 0;
    Hash(i, index, &b, &s);
    e[i] = s * table_[static_cast<size_t>(i) * buckets_ + b];
  }
  return Median(e, rows_);
}

std::vector<RecoveredEntry> CountSketch::RecoverTopK(uint64_t universe,
                                                     int k) const {
  const auto better = [](const RecoveredEntry& a, const RecoveredEntry& b) {
    const double fa = std::fabs(a.value), fb = std::fabs(b.value);
    return fa > fb || (fa == fb && a.index < b.index);
  };
  std::vector<RecoveredEntry> top;
  if (k <= 0) return top;
  top.reserve(k + 1);
  // A size-k heap whose top is the worst kept entry.
  for (uint64_t j = 0; j < universe; ++j) {
    RecoveredEntry e{j, Estimate(j)};
    if (static_cast<int>(top.size()) < k) {
      top.push_back(e);
      std::push_heap(top.begin(), top.end(), better);
    } else if (better(e, top.front())) {
      std::pop_heap(top.begin(), top.end(), better);
      top.back() = e;
      std::push_heap(top.begin(), top.end(), better);
    }
  }
  std::sort(top.begin(), top.end(), better);
  return top;
}

absl::Status CountSketch::MergeFrom(const CountSketch& other) {
  if (other.rows_ != rows_ || other.buckets_ != buckets_ ||
      other.seed_ != seed_) {
    return absl::InvalidArgumentError(
        absl::StrCat("count sketch merge: other is ", other.rows_, "x",
                     other.buckets_, " seed ", other.seed_, ", expected ",
                     rows_, "x", buckets_, " seed ", seed_));
  }
  for (size_t i = 0; i < table_.size(); ++i) table_[i] += other.table_[i];
  return absl::OkStatus();
}

OutputColumnSketch::OutputColumnSketch(int value_dim, int rows, int buckets,
                                       uint64_t seed) {
  columns_.reserve(value_dim);
  for (int c = 0; c < value_dim; ++c)
    columns_.emplace_back(rows, buckets, seed);
}

void OutputColumnSketch::AddRow(uint64_t row_index, const float* out_row) {
  for (size_t c = 0; c < columns_.size(); ++c) {
    columns_[c].Add(row_index, out_row[c]);
  }
}

absl::Status OutputColumnSketch::SketchQueries(const Approximator& approx,
                                               ConstMatrixView queries,
                                               uint64_t first_index,
                                               int batch) {
  const int dv = approx.shape().value_dim;
  if (dv != static_cast<int>(columns_.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("output sketch: approximator value_dim ", dv,
                     " != sketch columns ", columns_.size()));
  }
  batch = std::max(batch, 1);
  std::vector<float> out(static_cast<size_t>(batch) * dv);
  for (int64_t start = 0; start < queries.rows; start += batch) {
    const int64_t rows = std::min<int64_t>(batch, queries.rows - start);
    KVSKETCH_RETURN_IF_ERROR(approx.Query(
        {queries.row(start), rows, queries.cols}, {out.data(), rows, dv}));
    for (int64_t r = 0; r < rows; ++r) {
      AddRow(first_index + start + r, out.data() + r * dv);
    }
  }
  return absl::OkStatus();
}

std::vector<RecoveredEntry> OutputColumnSketch::RecoverColumnTopK(
    int column, uint64_t universe, int k) const {
  return columns_.at(column).RecoverTopK(universe, k);
}

}  // namespace kvsketch
