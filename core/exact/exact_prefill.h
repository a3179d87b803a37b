// File: core/exact/exact_prefill.h
//
// The bulk causal path of the `exact` approximator (issue #4 item 3): exact
// softmax attention of a whole prefill, computed as blocked matrix products
// in the manner of FlashAttention (online softmax over key blocks), so the
// arithmetic runs at GEMM speed instead of the memory-bound per-row scan of
// exact_kernels.h. Papers C.8 prices this path at "≈ 2·n²·d flops (QKᵀ + AV,
// half matrix each)"; it is the baseline conv's bulk fit must beat.
//
// Algorithm. Query rows are taken in blocks of kPrefillQueryRows rows: the
// same Bq positions of every query head of the GQA group, stacked (all heads
// attend to the same keys, so stacking makes the GEMMs g times taller at no
// extra key traffic). Keys are taken in blocks of up to kPrefillKeyBlock
// tokens that never straddle a storage chunk. For each (query block, key
// block) pair:
//   S = scale·Qb·Kbᵀ                     (GEMM, Bq·g × Bk, float)
//   mask: S[r][j] = -inf where key j >= row r's limit (diagonal blocks only)
//   m_b = rowmax S, P = exp(S - m_b), l_b = rowsum P   (float, <= Bk terms)
//   Ob = P·Vb                            (GEMM, float)
//   merge (m_b, l_b, Ob) into the row's running (m, l, O) in double with the
//   log-sum-exp rescaling exp(m_old - m_new), exp(m_b - m_new).
// Key blocks entirely past the query block's last limit are never read.
// The numerics are those of ExactCausalAttention (float within a block,
// double across blocks), so float rounding never compounds over n and no
// score magnitude overflows.
//
// f16/bf16 caches are widened to float one key/value block at a time into a
// per-thread scratch buffer before the GEMMs (an f32 cache is used in place).
//
// Cost: 2·T·(n_prev + T/2)·(d + dv)·g flops for T new tokens after n_prev
// cached ones (plus the diagonal blocks' masked half, a fraction ~Bk/T), and
// O(g·T·(n_prev + T)) exponentials. Cache reads: each key/value byte once per
// query block, i.e. ceil(T / Bq) times instead of g·T/4 (row tiles).
// Scratch: O(Bq·g·(Bk + d + 2·dv) + Bk·(d + dv)) floats per thread.
//
// Threads: `threads` > 1 splits the query blocks over that many std::threads
// (each block is independent; results are bitwise identical to threads = 1).
// Eigen itself runs single-threaded (no OpenMP). ExactApproximator::Prefill
// uses threads = 1: the server already runs heads and sessions in parallel
// on its worker pool.
//
// Thread safety: pure function of its inputs; safe to call concurrently.
#ifndef KVSKETCH_CORE_EXACT_EXACT_PREFILL_H_
#define KVSKETCH_CORE_EXACT_EXACT_PREFILL_H_

#include <cstdint>

#include "absl/types/span.h"
#include "core/exact/exact_kernels.h"

namespace kvsketch {

// Query rows (positions × heads) per block: tall enough for Eigen's GEMM to
// reach its packed-kernel speed, small enough that S and P stay in L2.
inline constexpr int kPrefillQueryRows = 128;
// Keys per block (fewer at a chunk end): S is kPrefillQueryRows × this.
inline constexpr int kPrefillKeyBlock = 256;

// Causal prefill attention. q is (group·t_new)×d row-major laid out [g][T]
// (the group query heads, each with t_new rows); `blocks` hold the cache of
// n_prev + t_new tokens (the new ones last); query row (h, t) attends to
// tokens [0, n_prev + t]. Writes out, (group·t_new)×dv in the same layout.
// REQUIRES: group >= 1, t_new >= 0, n_prev >= 0, d >= 1, dv >= 1, threads
// >= 1, and the blocks hold at least n_prev + t_new tokens.
void ExactPrefillAttention(StoreType store, const float* q, int group,
                           int64_t t_new, int64_t n_prev, int d, int dv,
                           float scale, absl::Span<const KvBlock> blocks,
                           float* out, int threads = 1);

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_EXACT_EXACT_PREFILL_H_
