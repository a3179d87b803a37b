// File: core/zeta/zorder_index.cc
#include "core/zeta/zorder_index.h"

#include <algorithm>
#include <utility>

#include "core/status_macros.h"

namespace kvsketch {

ZOrderIndex::ZOrderIndex(int curves, int64_t chunk)
    : curves_(curves), chunk_(chunk) {
  KVSKETCH_CHECK(curves >= 1 && chunk >= 1);
}

void ZOrderIndex::Append(const uint64_t* codes, int64_t count) {
  for (int64_t t = 0; t < count; ++t) {
    tail_codes_.insert(tail_codes_.end(), codes + t * curves_,
                       codes + (t + 1) * curves_);
    ++size_;
    if (tail_size() == chunk_) FlushTail();
  }
}

void ZOrderIndex::FlushTail() {
  Run run;
  run.begin = tail_begin();
  run.end = size_;
  run.by_curve.resize(curves_);
  const int64_t count = run.end - run.begin;
  for (int c = 0; c < curves_; ++c) {
    std::vector<ZOrderEntry>& e = run.by_curve[c];
    e.resize(count);
    for (int64_t t = 0; t < count; ++t) {
      e[t] = {tail_codes_[t * curves_ + c], run.begin + t};
    }
    std::sort(e.begin(), e.end());
  }
  tail_codes_.clear();
  tail_codes_.shrink_to_fit();
  runs_.push_back(std::move(run));
  // Binary-counter merging: the two newest runs merge while equal in size.
  while (runs_.size() >= 2) {
    Run& a = runs_[runs_.size() - 2];
    Run& b = runs_.back();
    if (a.end - a.begin != b.end - b.begin) break;
    Run merged;
    merged.begin = a.begin;
    merged.end = b.end;
    merged.by_curve.resize(curves_);
    for (int c = 0; c < curves_; ++c) {
      std::vector<ZOrderEntry>& out = merged.by_curve[c];
      out.resize(a.by_curve[c].size() + b.by_curve[c].size());
      std::merge(a.by_curve[c].begin(), a.by_curve[c].end(),
                 b.by_curve[c].begin(), b.by_curve[c].end(), out.begin());
    }
    runs_.pop_back();
    runs_.back() = std::move(merged);
  }
}

void ZOrderIndex::Candidates(const uint64_t* query_codes, int64_t window,
                             std::vector<int64_t>* out) const {
  if (window > 0) {
    for (const Run& run : runs_) {
      for (int c = 0; c < curves_; ++c) {
        const std::vector<ZOrderEntry>& e = run.by_curve[c];
        const int64_t size = static_cast<int64_t>(e.size());
        if (size <= window) {
          for (const ZOrderEntry& x : e) out->push_back(x.pos);
          continue;
        }
        const int64_t p =
            std::lower_bound(e.begin(), e.end(),
                             ZOrderEntry{query_codes[c], INT64_MIN}) -
            e.begin();
        int64_t lo = std::clamp<int64_t>(p - window / 2, 0, size - window);
        for (int64_t i = lo; i < lo + window; ++i) out->push_back(e[i].pos);
      }
    }
  }
  for (int64_t p = tail_begin(); p < size_; ++p) out->push_back(p);
}

void ZOrderIndex::Recode(
    const std::function<void(int64_t, int64_t, uint64_t*)>& encode) {
  std::vector<uint64_t> codes;
  for (Run& run : runs_) {
    const int64_t count = run.end - run.begin;
    codes.resize(count * curves_);
    encode(run.begin, count, codes.data());
    for (int c = 0; c < curves_; ++c) {
      std::vector<ZOrderEntry>& e = run.by_curve[c];
      for (int64_t t = 0; t < count; ++t) {
        e[t] = {codes[t * curves_ + c], run.begin + t};
      }
      std::sort(e.begin(), e.end());
    }
  }
  if (tail_size() > 0) encode(tail_begin(), tail_size(), tail_codes_.data());
}

int64_t ZOrderIndex::MemoryBytes() const {
  int64_t bytes =
      static_cast<int64_t>(tail_codes_.capacity() * sizeof(uint64_t));
  for (const Run& run : runs_) {
    for (const auto& e : run.by_curve) {
      bytes += static_cast<int64_t>(e.capacity() * sizeof(ZOrderEntry));
    }
  }
  return bytes;
}

}  // namespace kvsketch
