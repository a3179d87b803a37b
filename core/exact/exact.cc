// File: core/exact/exact.cc
#include "core/exact/exact.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/exact/exact_prefill.h"
#include "core/status_macros.h"
#include "core/util/half.h"

namespace kvsketch {
namespace {

// SaveState payload:
//   u8  store tag (0 f32, 1 f16, 2 bf16)
//   i64 num_tokens
//   keys   num_tokens × d  elements, in token order
//   values num_tokens × dv elements, in token order
// Elements are f32 or the u16 bit patterns of f16/bf16, little-endian.
uint8_t StoreTag(StoreType t) {
  switch (t) {
    case StoreType::kF32:
      return 0;
    case StoreType::kF16:
      return 1;
    case StoreType::kBf16:
      return 2;
  }
  return 255;
}

absl::StatusOr<std::unique_ptr<Approximator>> CreateExact(
    const SpecParams& params, const HeadShape& shape,
    std::string canonical_spec) {
  const std::string& store = params.GetEnum("store");
  StoreType t = StoreType::kF32;
  if (store == "f16") t = StoreType::kF16;
  if (store == "bf16") t = StoreType::kBf16;
  return std::unique_ptr<Approximator>(
      new ExactApproximator(shape, t, std::move(canonical_spec)));
}

}  // namespace

const KindDef& ExactKindDef() {
  static const KindDef* const def = new KindDef{
      "exact",
      "full KV cache, numerically stable softmax (the reference baseline)",
      {ParamDef{"store",
                ParamType::kEnum,
                "f32",
                {"f32", "f16", "bf16"},
                -1e300,
                1e300,
                "element type of the stored keys and values; f16/bf16 halve "
                "memory and query time at ~1e-3 / ~1e-2 relative error"}},
      &CreateExact};
  return *def;
}

ExactApproximator::ExactApproximator(const HeadShape& shape, StoreType store,
                                     std::string canonical_spec)
    : Approximator(shape), store_(store), spec_(std::move(canonical_spec)) {}

int64_t ExactApproximator::MemoryBytes() const {
  const int64_t row_bytes =
      static_cast<int64_t>(shape().head_dim + shape().value_dim) *
      StoreElementBytes(store_);
  return capacity_ * row_bytes +
         static_cast<int64_t>(chunks_.size() * sizeof(Chunk));
}

int64_t ExactApproximator::NextChunkCapacity(int64_t total_capacity) {
  return std::clamp(total_capacity, kMinChunkTokens, kMaxChunkTokens);
}

ExactApproximator::Chunk ExactApproximator::NewChunk(int64_t capacity) const {
  Chunk c;
  c.capacity = capacity;
  const size_t nk = static_cast<size_t>(capacity) * shape().head_dim;
  const size_t nv = static_cast<size_t>(capacity) * shape().value_dim;
  if (store_ == StoreType::kF32) {
    c.keys_f32 = std::make_unique_for_overwrite<float[]>(nk);
    c.values_f32 = std::make_unique_for_overwrite<float[]>(nv);
  } else {
    c.keys_u16 = std::make_unique_for_overwrite<uint16_t[]>(nk);
    c.values_u16 = std::make_unique_for_overwrite<uint16_t[]>(nv);
  }
  return c;
}

void ExactApproximator::StoreRows(Chunk& chunk, const float* keys,
                                  const float* values, int64_t count) const {
  const int64_t d = shape().head_dim;
  const int64_t dv = shape().value_dim;
  const size_t nk = static_cast<size_t>(count * d);
  const size_t nv = static_cast<size_t>(count * dv);
  switch (store_) {
    case StoreType::kF32:
      std::copy(keys, keys + nk, chunk.keys_f32.get() + chunk.size * d);
      std::copy(values, values + nv, chunk.values_f32.get() + chunk.size * dv);
      break;
    case StoreType::kF16:
      FloatToHalfN(keys, chunk.keys_u16.get() + chunk.size * d, nk);
      FloatToHalfN(values, chunk.values_u16.get() + chunk.size * dv, nv);
      break;
    case StoreType::kBf16:
      FloatToBf16N(keys, chunk.keys_u16.get() + chunk.size * d, nk);
      FloatToBf16N(values, chunk.values_u16.get() + chunk.size * dv, nv);
      break;
  }
  chunk.size += count;
}

int64_t ExactApproximator::AppendGrowthBytes(int64_t n) const {
  // Append's allocation loop: chunks double the capacity until they reach
  // kMaxChunkTokens, then stay at that size (closed form past it).
  const int64_t need = num_tokens_ + n;
  int64_t cap = capacity_;
  int64_t chunks = 0;
  while (cap < need && cap < kMaxChunkTokens) {
    cap += NextChunkCapacity(cap);
    ++chunks;
  }
  if (cap < need) {
    const int64_t more = (need - cap + kMaxChunkTokens - 1) / kMaxChunkTokens;
    cap += more * kMaxChunkTokens;
    chunks += more;
  }
  const int64_t row_bytes =
      static_cast<int64_t>(shape().head_dim + shape().value_dim) *
      StoreElementBytes(store_);
  return (cap - capacity_) * row_bytes +
         chunks * static_cast<int64_t>(sizeof(Chunk));
}

float ExactApproximator::MaxStorableMagnitude() const {
  switch (store_) {
    case StoreType::kF16:
      return 65504.0f;  // largest finite IEEE half
    case StoreType::kBf16:
      return Bf16ToFloat(0x7F7F);  // largest finite bfloat16
    case StoreType::kF32:
      break;
  }
  return std::numeric_limits<float>::max();
}

absl::Status ExactApproximator::Append(ConstMatrixView keys,
                                       ConstMatrixView values) {
  KVSKETCH_RETURN_IF_ERROR(CheckAppendArgs(keys, values));
  const int64_t n = keys.rows;
  // Allocate every chunk the append needs before storing anything, so an
  // allocation failure (bad_alloc) leaves the visible state unchanged.
  int64_t cap = capacity_;
  std::vector<Chunk> fresh;
  while (cap < num_tokens_ + n) {
    fresh.push_back(NewChunk(NextChunkCapacity(cap)));
    cap += fresh.back().capacity;
  }
  chunks_.reserve(chunks_.size() + fresh.size());
  for (Chunk& c : fresh) chunks_.push_back(std::move(c));
  capacity_ = cap;
  int64_t done = 0;
  // The first chunk with room: chunks before it are full.
  size_t ci = 0;
  while (ci < chunks_.size() && chunks_[ci].size == chunks_[ci].capacity) ++ci;
  while (done < n) {
    Chunk& c = chunks_[ci];
    const int64_t take = std::min(n - done, c.capacity - c.size);
    StoreRows(c, keys.row(done), values.row(done), take);
    done += take;
    ++ci;
  }
  num_tokens_ += n;
  return absl::OkStatus();
}

absl::Status ExactApproximator::Query(ConstMatrixView queries,
                                      MatrixView out) const {
  KVSKETCH_RETURN_IF_ERROR(CheckQueryArgs(queries, out));
  if (num_tokens_ == 0) {
    return absl::FailedPreconditionError(
        "query: no token has been appended yet");
  }
  if (queries.rows == 0) return absl::OkStatus();
  ExactAttention(store_, queries.data, queries.rows, shape().head_dim,
                 shape().value_dim, shape().scale, Blocks(), out.data);
  return absl::OkStatus();
}

std::vector<KvBlock> ExactApproximator::Blocks() const {
  std::vector<KvBlock> blocks;
  blocks.reserve(chunks_.size());
  for (const Chunk& c : chunks_) {
    if (c.size == 0) break;
    if (store_ == StoreType::kF32) {
      blocks.push_back({c.keys_f32.get(), c.values_f32.get(), c.size});
    } else {
      blocks.push_back({c.keys_u16.get(), c.values_u16.get(), c.size});
    }
  }
  return blocks;
}

absl::Status ExactApproximator::Prefill(ConstMatrixView queries, int group,
                                        ConstMatrixView keys,
                                        ConstMatrixView values,
                                        MatrixView out) {
  KVSKETCH_RETURN_IF_ERROR(CheckPrefillArgs(queries, group, keys, values, out));
  const int64_t t_new = keys.rows;
  const int d = shape().head_dim;
  const int dv = shape().value_dim;
  const int64_t n_prev = num_tokens_;
  KVSKETCH_RETURN_IF_ERROR(Append(keys, values));
  // Blocked GEMM path (exact_prefill.h): 2·T·(n_prev + T/2)·(d + dv)·g
  // flops at matrix-product speed; single-threaded, as the server already
  // runs heads in parallel. Decode (Query) keeps the row-tile kernel.
  ExactPrefillAttention(store_, queries.data, group, t_new, n_prev, d, dv,
                        shape().scale, Blocks(), out.data, /*threads=*/1);
  return absl::OkStatus();
}

absl::Status ExactApproximator::SaveState(ByteWriter& writer) const {
  writer.PutU8(StoreTag(store_));
  writer.PutI64(num_tokens_);
  const int64_t d = shape().head_dim;
  const int64_t dv = shape().value_dim;
  for (int pass = 0; pass < 2; ++pass) {
    const int64_t w = pass == 0 ? d : dv;
    for (const Chunk& c : chunks_) {
      const size_t count = static_cast<size_t>(c.size * w);
      if (store_ == StoreType::kF32) {
        const float* p = pass == 0 ? c.keys_f32.get() : c.values_f32.get();
        writer.PutFloats({p, count});
      } else {
        const uint16_t* p = pass == 0 ? c.keys_u16.get() : c.values_u16.get();
        writer.PutU16s({p, count});
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ExactApproximator::LoadState(ByteReader& reader) {
  uint8_t tag = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetU8(&tag, "exact store tag"));
  if (tag != StoreTag(store_)) {
    return absl::DataLossError(absl::StrCat("exact state has store tag ", tag,
                                            ", this approximator (", spec_,
                                            ") expects ", StoreTag(store_)));
  }
  int64_t n = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetI64(&n, "exact num_tokens"));
  const int64_t d = shape().head_dim;
  const int64_t dv = shape().value_dim;
  const uint64_t row_bytes =
      static_cast<uint64_t>(d + dv) * StoreElementBytes(store_);
  // Check the count against the bytes actually present before allocating.
  if (n < 0 || static_cast<uint64_t>(n) > reader.remaining() / row_bytes) {
    return absl::DataLossError(absl::StrCat(
        "exact state claims ", n, " tokens of ", row_bytes,
        " bytes each but only ", reader.remaining(), " bytes remain"));
  }
  std::vector<Chunk> chunks;
  int64_t cap = 0;
  while (cap < n) {
    chunks.push_back(NewChunk(NextChunkCapacity(cap)));
    Chunk& c = chunks.back();
    c.size = std::min(c.capacity, n - cap);
    cap += c.capacity;
  }
  for (int pass = 0; pass < 2; ++pass) {
    const int64_t w = pass == 0 ? d : dv;
    const char* what = pass == 0 ? "exact keys" : "exact values";
    for (Chunk& c : chunks) {
      const size_t count = static_cast<size_t>(c.size * w);
      if (store_ == StoreType::kF32) {
        float* p = pass == 0 ? c.keys_f32.get() : c.values_f32.get();
        KVSKETCH_RETURN_IF_ERROR(reader.GetFloats(p, count, what));
      } else {
        uint16_t* p = pass == 0 ? c.keys_u16.get() : c.values_u16.get();
        KVSKETCH_RETURN_IF_ERROR(reader.GetU16s(p, count, what));
      }
    }
  }
  chunks_ = std::move(chunks);
  capacity_ = cap;
  num_tokens_ = n;
  return absl::OkStatus();
}

}  // namespace kvsketch
