// File: client/llama/checkpoint.h
//
// A llama2.c checkpoint in the legacy `run.c` format (../shared/data/
// README.md), the model behind `kvsketch llama` (issue #6 item 1):
//
//   header  7 little-endian int32: dim, hidden_dim, n_layers, n_heads,
//           n_kv_heads, vocab_size, seq_len (vocab_size < 0: the classifier
//           is stored separately instead of shared with the embedding)
//   float32 token_embedding [vocab, dim], rms_att [L, dim],
//           wq [L, dim, dim], wk [L, kv_dim, dim], wv [L, kv_dim, dim],
//           wo [L, dim, dim], rms_ffn [L, dim], w1 [L, hidden, dim],
//           w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim],
//           two legacy RoPE tables [seq_len, head_dim / 2] (skipped),
//           classifier [vocab, dim] only when not shared
//
// head_dim = dim / n_heads, kv_dim = head_dim * n_kv_heads. Matrices are
// row-major [out, in], so a layer computes y = W x.
//
// Loading validates the whole file before trusting it: the header (every
// dimension positive and within the session limits of core/session_state.h,
// n_heads | dim, n_kv_heads | n_heads, head_dim even for RoPE's pairs), the
// exact file size the header implies, and that every weight is finite. Cost:
// one sequential read of the file, O(file size) memory (the weights).
#ifndef KVSKETCH_CLIENT_LLAMA_CHECKPOINT_H_
#define KVSKETCH_CLIENT_LLAMA_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvsketch::llama {

struct LlamaConfig {
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;  // always positive here; see shared_classifier
  int seq_len = 0;
  bool shared_classifier = true;

  int head_dim() const { return dim / n_heads; }
  int kv_dim() const { return head_dim() * n_kv_heads; }
};

// Bytes of the header: 7 int32.
inline constexpr int64_t kCheckpointHeaderBytes = 28;

// Checks a header (as stored: vocab_size negative for an unshared
// classifier) and returns the config. InvalidArgument naming the field and
// its value otherwise; a header starting with llama2.c's "ak42" magic (the
// newer export versions) is named as such.
absl::StatusOr<LlamaConfig> ConfigFromHeader(absl::Span<const int32_t> header);

// Exact size of a checkpoint file with this config, header included.
// REQUIRES: config came from ConfigFromHeader (so nothing overflows).
int64_t CheckpointFileBytes(const LlamaConfig& config);

struct LlamaCheckpoint {
  LlamaConfig config;
  std::vector<float> token_embedding;  // [vocab, dim]
  std::vector<float> rms_att;          // [L, dim]
  std::vector<float> wq;               // [L, dim, dim]
  std::vector<float> wk;               // [L, kv_dim, dim]
  std::vector<float> wv;               // [L, kv_dim, dim]
  std::vector<float> wo;               // [L, dim, dim]
  std::vector<float> rms_ffn;          // [L, dim]
  std::vector<float> w1;               // [L, hidden, dim]
  std::vector<float> w2;               // [L, dim, hidden]
  std::vector<float> w3;               // [L, hidden, dim]
  std::vector<float> rms_final;        // [dim]
  std::vector<float> classifier;       // [vocab, dim]; empty when shared

  // The output projection [vocab, dim] (the embedding when shared).
  const float* classifier_data() const {
    return config.shared_classifier ? token_embedding.data()
                                    : classifier.data();
  }
};

// Reads and validates a checkpoint file. NotFound if it cannot be opened;
// DataLoss naming the path and byte counts if it is shorter or longer than
// its header implies, or a weight is NaN/Inf; InvalidArgument (with the
// path) for a bad header.
absl::StatusOr<LlamaCheckpoint> LoadCheckpoint(const std::string& path);

// Writes `checkpoint` in the same format (RoPE tables zero-filled, as run.c
// ignores them), atomically. InvalidArgument naming the tensor if a vector
// does not have the size its config implies; Unavailable on I/O errors.
// For tests and tools that make or edit models.
absl::Status WriteCheckpoint(const std::string& path,
                             const LlamaCheckpoint& checkpoint);

}  // namespace kvsketch::llama

#endif  // KVSKETCH_CLIENT_LLAMA_CHECKPOINT_H_
