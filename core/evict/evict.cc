// File: core/evict/evict.cc
#include "core/evict/evict.h"

#include <algorithm>
#include <cmath>

#include "Eigen/Core"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/topk/sparse_softmax.h"

namespace kvsketch {
namespace {

constexpr uint8_t kStateVersion = 1;

using RowMatrix =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

absl::StatusOr<std::unique_ptr<Approximator>> CreateEvict(
    const SpecParams& params, const HeadShape& shape,
    std::string canonical_spec) {
  EvictOptions opt;
  opt.alpha = params.GetFloat("alpha");
  opt.c = params.GetFloat("c");
  opt.budget = params.GetInt("budget");
  opt.sinks = params.GetInt("sinks");
  opt.window = params.GetInt("window");
  opt.decay = params.GetFloat("decay");
  if (opt.budget > 0 && opt.budget <= opt.sinks + opt.window) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec ", canonical_spec, ": budget (", opt.budget,
                     ") must exceed sinks + window (", opt.sinks + opt.window,
                     ") so that at least one slot can hold a heavy hitter"));
  }
  return std::unique_ptr<Approximator>(
      new EvictApproximator(shape, opt, std::move(canonical_spec)));
}

// Slot capacity for `tokens` held tokens: 16, 20, 25, 31, ... (×1.25), so
// memory tracks b(n) within 25% and depends on the token count only.
int64_t CapacityFor(int64_t tokens) {
  int64_t cap = 16;
  while (cap < tokens) cap += cap / 4;
  return cap;
}

}  // namespace

const KindDef& EvictKindDef() {
  static const KindDef* const def = new KindDef{
      "evict",
      "KV cache of at most ceil(alpha*n^c)+sinks+window tokens (or a fixed "
      "budget), heavy-hitter eviction; memory O(n^c d) (papers/A_B.md B.3)",
      {
          ParamDef{"alpha",
                   ParamType::kFloat,
                   "1",
                   {},
                   1e-9,
                   1e9,
                   "budget scale: b(n) = ceil(alpha*n^c) + sinks + window"},
          ParamDef{"c",
                   ParamType::kFloat,
                   "0.5",
                   {},
                   0,
                   1,
                   "budget exponent C in (0,1)"},
          ParamDef{"budget",
                   ParamType::kInt,
                   "0",
                   {},
                   0,
                   1LL << 40,
                   "fixed total budget in tokens, sinks and window included "
                   "(0 = use alpha*n^c)"},
          ParamDef{"sinks",
                   ParamType::kInt,
                   "4",
                   {},
                   0,
                   1LL << 40,
                   "first tokens never evicted"},
          ParamDef{"window",
                   ParamType::kInt,
                   "64",
                   {},
                   0,
                   1LL << 22,
                   "most recent tokens never evicted"},
          ParamDef{"decay",
                   ParamType::kFloat,
                   "1",
                   {},
                   0,
                   1,
                   "per-Attend decay of the accumulated attention mass "
                   "(1 = plain sum, H2O)"},
      },
      &CreateEvict};
  return *def;
}

int64_t EvictBudget(const EvictOptions& opt, int64_t n) {
  if (opt.budget > 0) return opt.budget;
  const double heavy =
      std::ceil(opt.alpha * std::pow(static_cast<double>(n), opt.c));
  const int64_t h =
      heavy >= 4e18 ? (int64_t{1} << 62) : static_cast<int64_t>(heavy);
  return std::max<int64_t>(h, 1) + opt.sinks + opt.window;
}

EvictApproximator::EvictApproximator(const HeadShape& shape,
                                     const EvictOptions& options,
                                     std::string canonical_spec)
    : Approximator(shape),
      opt_(options),
      spec_(std::move(canonical_spec)),
      win_(options.window) {}

int64_t EvictApproximator::MemoryBytes() const {
  return static_cast<int64_t>(
      (keys_.capacity() + values_.capacity()) * sizeof(float) +
      acc_.capacity() * sizeof(double) + pos_.capacity() * sizeof(int64_t) +
      win_.capacity() * sizeof(int64_t) + heap_.capacity() * sizeof(int64_t));
}

void EvictApproximator::Reserve(int64_t tokens) {
  if (tokens <= capacity_) return;
  capacity_ = CapacityFor(tokens);
  keys_.reserve(capacity_ * shape().head_dim);
  values_.reserve(capacity_ * shape().value_dim);
  acc_.reserve(capacity_);
  pos_.reserve(capacity_);
  heap_.reserve(capacity_);
}

bool EvictApproximator::HeapLess(int64_t a, int64_t b) const {
  return acc_[a] < acc_[b] || (acc_[a] == acc_[b] && pos_[a] < pos_[b]);
}

int64_t EvictApproximator::EvictOne() {
  // std heaps are max-heaps: order by "evicts later" to get the min on top.
  const auto later = [this](int64_t a, int64_t b) { return HeapLess(b, a); };
  if (heap_dirty_) {
    std::make_heap(heap_.begin(), heap_.end(), later);
    heap_dirty_ = false;
  }
  KVSKETCH_CHECK(!heap_.empty());
  std::pop_heap(heap_.begin(), heap_.end(), later);
  const int64_t victim = heap_.back();
  heap_.pop_back();
  return victim;
}

void EvictApproximator::PushEvictable(int64_t slot) {
  heap_.push_back(slot);
  if (!heap_dirty_) {
    const auto later = [this](int64_t a, int64_t b) { return HeapLess(b, a); };
    std::push_heap(heap_.begin(), heap_.end(), later);
  }
}

void EvictApproximator::AppendOne(const float* key, const float* value) {
  const int d = shape().head_dim, dv = shape().value_dim;
  const int64_t pos = n_++;
  if (pos >= opt_.sinks && opt_.window > 0 && win_count_ == opt_.window) {
    // The oldest window token leaves the window and may now be evicted.
    PushEvictable(win_[win_head_]);
    win_head_ = (win_head_ + 1) % opt_.window;
    --win_count_;
  }
  int64_t slot;
  if (stored_ + 1 > EvictBudget(opt_, n_)) {
    // b(n) never shrinks, so one eviction always makes room; the freed slot
    // takes the new token and slots stay dense in [0, stored_).
    slot = EvictOne();
  } else {
    slot = stored_++;
    Reserve(stored_);
    keys_.resize(stored_ * d);
    values_.resize(stored_ * dv);
    acc_.push_back(0);
    pos_.push_back(0);
  }
  std::copy_n(key, d, keys_.data() + slot * d);
  std::copy_n(value, dv, values_.data() + slot * dv);
  acc_[slot] = 0;
  pos_[slot] = pos;
  if (pos < opt_.sinks) return;
  if (opt_.window > 0) {
    win_[(win_head_ + win_count_) % opt_.window] = slot;
    ++win_count_;
  } else {
    PushEvictable(slot);
  }
}

absl::Status EvictApproximator::Append(ConstMatrixView keys,
                                       ConstMatrixView values) {
  KVSKETCH_RETURN_IF_ERROR(CheckAppendArgs(keys, values));
  for (int64_t i = 0; i < keys.rows; ++i) AppendOne(keys.row(i), values.row(i));
  return absl::OkStatus();
}

void EvictApproximator::AttendRow(const float* q, float* out,
                                  double* weights) const {
  const int d = shape().head_dim, dv = shape().value_dim;
  Eigen::Map<const RowMatrix> k(keys_.data(), stored_, d);
  Eigen::Map<const Eigen::VectorXf> qv(q, d);
  const Eigen::VectorXf s = k * qv;
  std::vector<double> scores(stored_);
  std::vector<int64_t> idx(stored_);
  for (int64_t i = 0; i < stored_; ++i) {
    scores[i] = static_cast<double>(shape().scale) * s[i];
    idx[i] = i;
  }
  SubsetSoftmax(scores.data(), idx.data(), stored_, values_.data(), dv, out,
                weights);
}

absl::Status EvictApproximator::Query(ConstMatrixView queries,
                                      MatrixView out) const {
  KVSKETCH_RETURN_IF_ERROR(CheckQueryArgs(queries, out));
  if (n_ == 0) {
    return absl::FailedPreconditionError(
        "query: no token has been appended to this head yet");
  }
  for (int64_t r = 0; r < queries.rows; ++r) {
    AttendRow(queries.row(r), out.row(r), nullptr);
  }
  return absl::OkStatus();
}

absl::Status EvictApproximator::Attend(ConstMatrixView queries,
                                       MatrixView out) {
  KVSKETCH_RETURN_IF_ERROR(CheckQueryArgs(queries, out));
  if (n_ == 0) {
    return absl::FailedPreconditionError(
        "attend: no token has been appended to this head yet");
  }
  std::vector<double> mass(stored_, 0.0), w(stored_);
  for (int64_t r = 0; r < queries.rows; ++r) {
    AttendRow(queries.row(r), out.row(r), w.data());
    for (int64_t i = 0; i < stored_; ++i) mass[i] += w[i];
  }
  for (int64_t i = 0; i < stored_; ++i) {
    acc_[i] = opt_.decay * acc_[i] + mass[i];
  }
  heap_dirty_ = true;
  return absl::OkStatus();
}

std::vector<int64_t> EvictApproximator::StoredPositions() const {
  std::vector<int64_t> p(pos_.begin(), pos_.begin() + stored_);
  std::sort(p.begin(), p.end());
  return p;
}

// SaveState payload (version 1): u8 version, i64 n, i64 stored, then per
// slot in slot order: pos (i64), acc (f64); keys stored×d f32, values
// stored×dv f32. The window and the heap are derived from positions on load.
absl::Status EvictApproximator::SaveState(ByteWriter& writer) const {
  writer.PutU8(kStateVersion);
  writer.PutI64(n_);
  writer.PutI64(stored_);
  for (int64_t i = 0; i < stored_; ++i) {
    writer.PutI64(pos_[i]);
    writer.PutF64(acc_[i]);
  }
  writer.PutFloats(keys_);
  writer.PutFloats(values_);
  return absl::OkStatus();
}

absl::Status EvictApproximator::LoadState(ByteReader& reader) {
  const int d = shape().head_dim, dv = shape().value_dim;
  uint8_t version = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetU8(&version, "evict state version"));
  if (version != kStateVersion) {
    return absl::DataLossError(
        absl::StrCat("evict state: unknown version ", version));
  }
  int64_t n = 0, stored = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetI64(&n, "evict num_tokens"));
  KVSKETCH_RETURN_IF_ERROR(reader.GetI64(&stored, "evict num_stored"));
  if (n < 0 || stored < 0 || stored > n ||
      (n > 0 && stored > EvictBudget(opt_, n)) ||
      // Divide, not multiply: the product wraps for a hostile count.
      static_cast<uint64_t>(stored) >
          reader.remaining() / (16 + 4 * static_cast<uint64_t>(d + dv))) {
    return absl::DataLossError(absl::StrCat("evict state: bad counts (tokens ",
                                            n, ", stored ", stored, ")"));
  }
  EvictApproximator fresh(shape(), opt_, spec_);
  fresh.Reserve(stored);
  fresh.n_ = n;
  fresh.stored_ = stored;
  fresh.acc_.resize(stored);
  fresh.pos_.resize(stored);
  for (int64_t i = 0; i < stored; ++i) {
    KVSKETCH_RETURN_IF_ERROR(reader.GetI64(&fresh.pos_[i], "evict position"));
    KVSKETCH_RETURN_IF_ERROR(reader.GetF64(&fresh.acc_[i], "evict mass"));
    // A mass is a (decayed) sum of softmax weights, at most one per query
    // row answered: >= 0 and far below 2^53. Anything else (NaN, negative,
    // huge) cannot come from Attend and marks a corrupt state.
    if (fresh.pos_[i] < 0 || fresh.pos_[i] >= n ||
        !(fresh.acc_[i] >= 0 && fresh.acc_[i] <= 0x1p53)) {
      return absl::DataLossError("evict state: bad position or mass");
    }
  }
  fresh.keys_.resize(stored * d);
  fresh.values_.resize(stored * dv);
  KVSKETCH_RETURN_IF_ERROR(
      reader.GetFloats(fresh.keys_.data(), stored * d, "evict keys"));
  KVSKETCH_RETURN_IF_ERROR(
      reader.GetFloats(fresh.values_.data(), stored * dv, "evict values"));
  // Clients cannot send non-finite keys or values (wire/tensor_codec.h), so
  // such a state is corrupt; loaded, it made every mass NaN at the next
  // Attend (tests/fuzz/snapshot_fuzzer.cc).
  for (const std::vector<float>* v : {&fresh.keys_, &fresh.values_}) {
    for (float x : *v) {
      if (!std::isfinite(x)) {
        return absl::DataLossError("evict state: non-finite key or value");
      }
    }
  }
  // Every sink and window position must be held, each position once.
  std::vector<int64_t> order(stored);
  for (int64_t i = 0; i < stored; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return fresh.pos_[a] < fresh.pos_[b];
  });
  for (int64_t i = 1; i < stored; ++i) {
    if (fresh.pos_[order[i]] == fresh.pos_[order[i - 1]]) {
      return absl::DataLossError("evict state: duplicate position");
    }
  }
  const int64_t win_begin = std::max(opt_.sinks, n - opt_.window);
  const int64_t must = std::min(opt_.sinks, n) + (n - std::min(win_begin, n));
  int64_t have = 0;
  for (int64_t i = 0; i < stored; ++i) {
    const int64_t p = fresh.pos_[order[i]];
    if (p < opt_.sinks) {
      ++have;
    } else if (p >= win_begin) {
      ++have;
      fresh.win_[(fresh.win_head_ + fresh.win_count_) % opt_.window] = order[i];
      ++fresh.win_count_;
    } else {
      fresh.heap_.push_back(order[i]);
    }
  }
  if (have != must) {
    return absl::DataLossError(
        "evict state: a sink or window token is missing");
  }
  fresh.heap_dirty_ = true;
  *this = std::move(fresh);
  return absl::OkStatus();
}

}  // namespace kvsketch
