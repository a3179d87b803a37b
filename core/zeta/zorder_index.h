// File: core/zeta/zorder_index.h
//
// The per-head streaming Z-order index of `zeta`
// (papers/C_D_E_conv_regression_zeta.md §E.5, "Per-session streaming
// index"). It maps token positions to their Morton codes on L curves and
// answers "which positions have codes near this one?".
//
// Layout, LSM-style: appended (codes, position) pairs go to an unsorted tail
// of `chunk` tokens. When the tail fills, it is sorted per curve into a run of
// one chunk, and runs are merged like a binary counter: while the two newest
// runs hold the same number of tokens they are merged (std::merge, linear) into
// one of twice the size. So run sizes are distinct powers of two chunks,
// newest smallest, there are at most log2(n/chunk) + 1 runs, every run covers a
// contiguous position range, and a token takes part in at most log2(n/chunk)
// merges: amortised O(L·log(n/chunk)) entry moves per token plus the tail sort
// O(L·log chunk); never a full re-sort.
//
// Entries are (code, position), 16 bytes, sorted by code then position (so
// ties are ordered and the state is a function of the appended data alone).
//
// Query: per run and curve, binary search of the query code (O(log n)), then
// the `window` entries centred on the insertion point (shifted inwards at the
// ends of the run; the whole run if it is smaller). Total O(L·log²(n)) +
// O(L·runs·window) positions, plus every tail position.
//
// Memory: 16·L bytes per indexed token (exactly, runs are allocated at their
// final size) plus 8·L bytes per tail token.
//
// Thread safety: const methods may run concurrently; others need exclusive
// access.
#ifndef KVSKETCH_CORE_ZETA_ZORDER_INDEX_H_
#define KVSKETCH_CORE_ZETA_ZORDER_INDEX_H_

#include <cstdint>
#include <functional>
#include <vector>

namespace kvsketch {

struct ZOrderEntry {
  uint64_t code = 0;
  int64_t pos = 0;

  friend bool operator<(const ZOrderEntry& a, const ZOrderEntry& b) {
    return a.code < b.code || (a.code == b.code && a.pos < b.pos);
  }
  friend bool operator==(const ZOrderEntry& a, const ZOrderEntry& b) {
    return a.code == b.code && a.pos == b.pos;
  }
};

class ZOrderIndex {
 public:
  // One sorted run: positions [begin, end), and per curve the entries of
  // those positions sorted by (code, pos).
  struct Run {
    int64_t begin = 0, end = 0;
    std::vector<std::vector<ZOrderEntry>> by_curve;
  };

  // REQUIRES: curves >= 1, chunk >= 1.
  ZOrderIndex(int curves, int64_t chunk);

  int curves() const { return curves_; }
  int64_t chunk() const { return chunk_; }
  // Positions indexed so far (runs + tail); the next appended is size().
  int64_t size() const { return size_; }
  int64_t tail_begin() const { return size_ - tail_size(); }
  int64_t tail_size() const {
    return static_cast<int64_t>(tail_codes_.size()) / curves_;
  }
  const std::vector<Run>& runs() const { return runs_; }

  // Appends `count` tokens at positions size() .. size()+count−1; codes is
  // count × curves, token-major (codes[t·curves + c] = code of token t on
  // curve c). Flushes the tail into a run each time it reaches `chunk`.
  void Append(const uint64_t* codes, int64_t count);

  // Appends the positions whose codes are near query_codes[c] on each curve
  // c (see the file comment) to *out, which may then hold duplicates, then
  // every tail position. Positions come out of runs newest-run-last order.
  void Candidates(const uint64_t* query_codes, int64_t window,
                  std::vector<int64_t>* out) const;

  // Replaces every code: encode(first, count, out) must write the count ×
  // curves codes (token-major) of positions first .. first+count−1. Each run
  // is re-sorted. O(n·L·log n) plus the encoding: used when the encoding
  // changes (zeta's norm bound Φ grows), never on the append path.
  void Recode(const std::function<void(int64_t, int64_t, uint64_t*)>& encode);

  // Heap bytes: entries of all runs plus the tail codes.
  int64_t MemoryBytes() const;

 private:
  void FlushTail();

  int curves_;
  int64_t chunk_;
  int64_t size_ = 0;
  std::vector<Run> runs_;             // oldest (largest) first
  std::vector<uint64_t> tail_codes_;  // tail_size × curves, token-major
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_ZETA_ZORDER_INDEX_H_
