// File: client/llama/forward.h
//
// The forward pass of a llama2.c model for one token (issue #6 item 1), with
// the same semantics as llama2.c's run.c so a checkpoint behaves here as it
// does there:
//
//   x = embedding[token]
//   per layer l:
//     h = RmsNorm(x, rms_att[l]);  q = wq h, k = wk h, v = wv h
//     RoPE on q and k at position pos
//     a = attention(q; keys and values of positions 0..pos)   <- backend
//     x += wo a
//     h = RmsNorm(x, rms_ffn[l]);  x += w2 (silu(w1 h) * (w3 h))
//   logits = classifier RmsNorm(x, rms_final)
//
// Attention is the one pluggable piece (AttentionBackend): kvsketch serves it
// in process (LocalBackend) or over gRPC (RemoteBackend), exact or through
// an approximator (client/llama/backends.h). Everything else is dense float
// matrix-vector products through Eigen.
//
// Cost per token, with d the model dim, f the hidden dim, L the layers, V
// the vocabulary: O(L·(2d² + 2·d·kv_dim + 3·d·f) + V·d) multiply-adds
// here, plus what the backend spends on attention (exact: O(pos·d) per
// layer).
#ifndef KVSKETCH_CLIENT_LLAMA_FORWARD_H_
#define KVSKETCH_CLIENT_LLAMA_FORWARD_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "client/llama/checkpoint.h"

namespace kvsketch::llama {

// RMSNorm epsilon of run.c.
inline constexpr float kRmsNormEps = 1e-5f;
// RoPE base of run.c.
inline constexpr float kRopeTheta = 10000.0f;

// Attention for the forward pass. The model calls Attend once per layer per
// token, layers in order 0..L-1, positions 0, 1, 2, ... without gaps: the
// backend appends this position's k and v to the layer and returns the
// attention of q over positions 0..pos of that layer.
//   q   [n_heads, head_dim]     post-RoPE queries
//   k   [n_kv_heads, head_dim]  post-RoPE key of this position
//   v   [n_kv_heads, head_dim]
//   out [n_heads, head_dim]     softmax(q·Kᵀ / sqrt(head_dim)) V per head,
//                               query head h reading KV head
//                               h / (n_heads / n_kv_heads) (grouped-query
//                               attention, as run.c's kv_mul)
// A failed call must leave the backend's state as it was.
class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual absl::Status Attend(int layer, int pos, absl::Span<const float> q,
                              absl::Span<const float> k,
                              absl::Span<const float> v,
                              absl::Span<float> out) = 0;
};

// --- The blocks, public so tests check each one against a reference ---

// out = weight ⊙ x / sqrt(mean(x²) + kRmsNormEps). out may alias x.
// REQUIRES: equal sizes. O(n).
void RmsNorm(absl::Span<const float> x, absl::Span<const float> weight,
             absl::Span<float> out);

// Rotates each adjacent pair (2i, 2i+1) of every head of `vec` (heads ×
// head_dim) by the angle pos · theta^(-2i / head_dim); i counts pairs within
// a head (run.c: `head_dim = i % head_size`), so every head gets the same
// frequencies. Position 0 is the identity. REQUIRES: head_dim even and a
// divisor of vec.size(). O(vec.size()).
void ApplyRope(int pos, int head_dim, absl::Span<float> vec);

// The SwiGLU MLP of one layer: out = w2 (silu(w1 x) ⊙ (w3 x)), silu(z) =
// z / (1 + e^-z). w1, w3 are [hidden, dim], w2 [dim, hidden], row-major.
// scratch holds 2·hidden floats. REQUIRES: sizes as stated; out must not
// alias x. O(3·dim·hidden).
void SwiGlu(const float* w1, const float* w2, const float* w3, int dim,
            int hidden, absl::Span<const float> x, absl::Span<float> scratch,
            absl::Span<float> out);

// The whole model. Holds the weights and per-token scratch buffers, so one
// LlamaModel runs one sequence at a time (not thread-safe); the KV state
// lives in the backend, so a model can serve several backends in turn.
class LlamaModel {
 public:
  explicit LlamaModel(LlamaCheckpoint checkpoint);

  const LlamaConfig& config() const { return checkpoint_.config; }
  const LlamaCheckpoint& checkpoint() const { return checkpoint_; }

  // Runs token `token` at position `pos` and writes the next-token logits
  // (vocab_size floats). InvalidArgument naming the argument for a token
  // outside [0, vocab), pos outside [0, seq_len) or a wrong logits size;
  // otherwise the backend's error, if any. The backend sees exactly one
  // Attend per layer per call. Arguments are checked before any Attend, so
  // a rejected call leaves the backend untouched; a backend error at layer
  // l leaves layers < l holding this position (each Attend is atomic, the
  // token as a whole is not), so the caller must discard that sequence.
  absl::Status Forward(int token, int pos, AttentionBackend& backend,
                       absl::Span<float> logits);

 private:
  LlamaCheckpoint checkpoint_;
  // Scratch, sized once: x, xb (dim), q, att (dim), k, v (kv_dim), hb
  // (2·hidden).
  std::vector<float> x_, xb_, q_, att_, k_, v_, hb_;
};

}  // namespace kvsketch::llama

#endif  // KVSKETCH_CLIENT_LLAMA_FORWARD_H_
