// File: core/exact/exact.h
//
// `exact`: the full KV cache and numerically stable softmax attention, the
// baseline every other approximator is measured against.
//
//   exact:store=f32    keys and values as float (default)
//   exact:store=f16    IEEE binary16, half the memory, ~1e-3 relative error
//   exact:store=bf16   bfloat16, half the memory, ~1e-2 relative error
//
// Storage is a list of chunks, each holding K and V of up to kMaxChunkTokens
// tokens in two contiguous arrays. Chunk capacities grow geometrically from
// kMinChunkTokens (so a short session does not pay for a full chunk) to
// kMaxChunkTokens; growth allocates a new chunk and never copies the cache.
// MemoryBytes() counts allocated capacity: at most
// max(2n, n + kMaxChunkTokens) · (d + dv) · element bytes, plus a small
// per-chunk record (counted per chunk, so equal states report equal bytes).
//
// Costs: Append O(T·(d + dv)); Query O(m·n·(d + dv)), reading each cache byte
// once per group of up to 4 query rows (memory-bandwidth bound at long n).
//
// Thread safety: as Approximator (const methods may run concurrently).
#ifndef KVSKETCH_CORE_EXACT_EXACT_H_
#define KVSKETCH_CORE_EXACT_EXACT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/approximator.h"
#include "core/exact/exact_kernels.h"
#include "core/registry.h"

namespace kvsketch {

// The registry entry of the `exact` kind.
const KindDef& ExactKindDef();

class ExactApproximator : public Approximator {
 public:
  static constexpr int64_t kMinChunkTokens = 16;
  static constexpr int64_t kMaxChunkTokens = 2048;

  ExactApproximator(const HeadShape& shape, StoreType store,
                    std::string canonical_spec);

  std::string Spec() const override { return spec_; }
  int64_t num_tokens() const override { return num_tokens_; }
  int64_t MemoryBytes() const override;
  absl::Status Append(ConstMatrixView keys, ConstMatrixView values) override;
  absl::Status Query(ConstMatrixView queries, MatrixView out) const override;
  // Bulk causal path: appends the T tokens, then answers all g·T query rows
  // with the blocked GEMM kernel of core/exact/exact_prefill.h (query blocks
  // × key blocks, causal mask, online stable softmax). Same result as the
  // row-by-row default up to float rounding. Cost
  // 2·T·(n_prev + T/2)·(d + dv)·g flops at ~0.8 of the machine's sgemm rate.
  absl::Status Prefill(ConstMatrixView queries, int group, ConstMatrixView keys,
                       ConstMatrixView values, MatrixView out) override;
  absl::Status SaveState(ByteWriter& writer) const override;
  absl::Status LoadState(ByteReader& reader) override;

  StoreType store() const { return store_; }
  // 65504 for f16, the largest finite bf16 (~3.3895e38) for bf16.
  float MaxStorableMagnitude() const override;
  // The chunks an append of n tokens would allocate, exactly (n·(d + dv)
  // elements rounded up to whole chunks; 0 while the last chunk has room).
  int64_t AppendGrowthBytes(int64_t n) const override;

 private:
  // One run of tokens. Exactly one of the float / uint16 pairs is allocated,
  // by store type; size <= capacity.
  struct Chunk {
    int64_t capacity = 0;
    int64_t size = 0;
    std::unique_ptr<float[]> keys_f32, values_f32;
    std::unique_ptr<uint16_t[]> keys_u16, values_u16;
  };

  // The stored chunks that hold tokens, as kernel blocks.
  std::vector<KvBlock> Blocks() const;
  Chunk NewChunk(int64_t capacity) const;
  // Capacity of the chunk that follows `total_capacity` allocated tokens.
  static int64_t NextChunkCapacity(int64_t total_capacity);
  // Copies rows [from, from+count) of keys/values into chunk at its end.
  void StoreRows(Chunk& chunk, const float* keys, const float* values,
                 int64_t count) const;

  StoreType store_;
  std::string spec_;
  int64_t num_tokens_ = 0;
  int64_t capacity_ = 0;  // sum of chunk capacities
  std::vector<Chunk> chunks_;
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_EXACT_EXACT_H_
