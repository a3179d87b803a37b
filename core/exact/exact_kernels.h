// File: core/exact/exact_kernels.h
//
// The hot loop of the `exact` approximator: softmax attention of m query rows
// over a key/value cache held as a list of contiguous blocks, each stored as
// f32, f16 or bf16.
//
// Numerics: the cache is cut into sub-blocks of kKeyBlock keys. Within a
// sub-block the scores, their local max, exp(s - max), the local normaliser
// and the local weighted value sum are float (at most kKeyBlock terms each);
// sub-blocks are merged into a running (max, normaliser, output) triple in
// double with the usual log-sum-exp rescaling exp(m_old - m_new), so no
// score magnitude overflows and the float rounding never compounds over n.
//
// Cost: O(m·n·(d + dv)) flops; every key and value byte is read once per call
// for up to kRowTile query rows (m = 1..4 share one pass), so at long n the
// call is bound by memory bandwidth. Scratch: O(m·dv) heap per call.
//
// Thread safety: pure function of its inputs; safe to call concurrently.
#ifndef KVSKETCH_CORE_EXACT_EXACT_KERNELS_H_
#define KVSKETCH_CORE_EXACT_EXACT_KERNELS_H_

#include <cstdint>

#include "absl/types/span.h"

namespace kvsketch {

enum class StoreType { kF32, kF16, kBf16 };

// Bytes per stored element.
inline int StoreElementBytes(StoreType t) {
  return t == StoreType::kF32 ? 4 : 2;
}

// One contiguous run of `rows` tokens: keys rows×d, values rows×dv, of the
// element type given by the StoreType (float, or uint16_t bit patterns).
struct KvBlock {
  const void* keys = nullptr;
  const void* values = nullptr;
  int64_t rows = 0;
};

// Keys per softmax sub-block (see the file comment).
inline constexpr int kKeyBlock = 64;
// Query rows sharing one pass over the cache.
inline constexpr int kRowTile = 4;

// out (m×dv, row-major) = softmax(scale · q · Kᵀ) · V over the concatenation
// of `blocks`. REQUIRES: q is m×d row-major, blocks hold at least one token,
// m >= 0, d >= 1, dv >= 1.
void ExactAttention(StoreType store, const float* q, int64_t m, int d, int dv,
                    float scale, absl::Span<const KvBlock> blocks, float* out);

// As ExactAttention, but row r sees only the first limits[r] tokens of the
// concatenated blocks (the causal mask of a bulk prefill); limits == nullptr
// means every token. Rows with nearby limits should be adjacent: each tile of
// 4 rows scans up to its largest limit. REQUIRES: 1 <= limits[r].
void ExactCausalAttention(StoreType store, const float* q, int64_t m, int d,
                          int dv, float scale, absl::Span<const KvBlock> blocks,
                          const int64_t* limits, float* out);

// exp(x) for x <= 0 over n floats, the vectorised exponential used by the
// kernel (exposed for its accuracy test). Max relative error about 3e-7
// (a 7th-degree Taylor polynomial on |r| <= ln2/2 after range reduction);
// inputs below -87.33 give 0.
void ExpNonPositive(const float* x, float* out, int64_t n);

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_EXACT_EXACT_KERNELS_H_
