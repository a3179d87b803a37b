// File: client/llama/backends.h
//
// Attention backends of the llama forward pass (client/llama/forward.h),
// issue #6 item 1: kvsketch holds the KV state of every layer and answers
// the attention of each new token.
//
//   LocalBackend   an in-process kvsketch::SessionState (the same object
//                  the server holds per session) with any approximator
//                  spec; "exact" is the reference every other run is
//                  compared with.
//   RemoteBackend  a session on a kvsketch server: CreateSession, one Decode
//                  stream with one step per (token, layer) carrying one entry
//                  {layer, k, v, q} (T = 1, M = 1), DeleteSession at the end.
//
// Both check that positions arrive in order (position p of a layer is its
// p-th token), so a caller that skipped or repeated a token gets an error
// instead of silently misaligned attention. Cost per Attend: the
// approximator's append + one query of n_heads rows (exact: O(pos·head_dim)
// per query head); remote adds one network round trip and
// O((n_heads + 2·n_kv_heads)·head_dim) bytes each way.
#ifndef KVSKETCH_CLIENT_LLAMA_BACKENDS_H_
#define KVSKETCH_CLIENT_LLAMA_BACKENDS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/attention_client.h"
#include "client/llama/checkpoint.h"
#include "client/llama/forward.h"
#include "core/session_state.h"

namespace kvsketch::llama {

// The session a model needs: one layer per transformer layer, n_kv_heads KV
// heads, n_heads query heads, head_dim = value_dim, scale 1/sqrt(head_dim)
// (run.c), at most seq_len tokens per layer.
SessionConfig ModelSessionConfig(const LlamaConfig& model,
                                 absl::string_view spec);

class LocalBackend : public AttentionBackend {
 public:
  // InvalidArgument naming "spec" for a bad approximator spec.
  static absl::StatusOr<std::unique_ptr<LocalBackend>> Create(
      const LlamaConfig& model, absl::string_view spec);

  absl::Status Attend(int layer, int pos, absl::Span<const float> q,
                      absl::Span<const float> k, absl::Span<const float> v,
                      absl::Span<float> out) override;

  // Canonical spec (every layer uses the same one).
  const std::string& spec() const { return state_->layer_spec(0); }
  // SessionState::MemoryBytes: the approximators' heap state.
  int64_t StateBytes() const { return state_->MemoryBytes(); }
  const SessionState& state() const { return *state_; }

 private:
  LocalBackend(const LlamaConfig& model, std::unique_ptr<SessionState> state)
      : model_(model), state_(std::move(state)) {}

  LlamaConfig model_;
  std::unique_ptr<SessionState> state_;
};

class RemoteBackend : public AttentionBackend {
 public:
  // Creates the session (the server canonicalises the spec: InvalidArgument
  // from the server for a bad one) and opens its Decode stream. `client`
  // must outlive the backend.
  static absl::StatusOr<std::unique_ptr<RemoteBackend>> Create(
      client::AttentionClient* client, const LlamaConfig& model,
      absl::string_view spec);

  // Closes (Close()) if not closed yet, ignoring errors: a backend never
  // leaves its session behind on the server if the server is reachable.
  ~RemoteBackend() override;

  // A step's own error (e.g. InvalidArgument from the server) leaves the
  // session as it was and the stream usable. A broken stream fails this and
  // every later call with the stream's status.
  absl::Status Attend(int layer, int pos, absl::Span<const float> q,
                      absl::Span<const float> k, absl::Span<const float> v,
                      absl::Span<float> out) override;

  const std::string& session_id() const { return session_id_; }
  // Canonical spec as the server returned it.
  const std::string& spec() const { return spec_; }
  // GetSession's state_bytes.
  absl::StatusOr<int64_t> StateBytes();

  // Ends the Decode stream and deletes the session. Idempotent; returns the
  // first error (the session is deleted even if the stream failed).
  absl::Status Close();

 private:
  RemoteBackend(client::AttentionClient* client, const LlamaConfig& model,
                std::string session_id, std::string spec);

  client::AttentionClient* client_;
  LlamaConfig model_;
  std::string session_id_;
  std::string spec_;
  std::unique_ptr<client::DecodeStream> stream_;
  std::vector<int64_t> next_pos_;  // per layer: the position expected next
  uint64_t step_id_ = 0;
  absl::Status broken_;  // set once the stream fails
  bool closed_ = false;
};

// Wraps another backend and records the post-RoPE q, k and v it is given,
// for trace export (issue #6 item 3). Memory O(L·T·(n_heads + 2·n_kv_heads)
// ·head_dim) floats for T positions. Records only calls the wrapped backend
// accepted.
class RecordingBackend : public AttentionBackend {
 public:
  // `inner` must outlive this object.
  RecordingBackend(const LlamaConfig& model, AttentionBackend* inner);

  absl::Status Attend(int layer, int pos, absl::Span<const float> q,
                      absl::Span<const float> k, absl::Span<const float> v,
                      absl::Span<float> out) override;

  // Positions recorded in every layer.
  int64_t positions() const;
  // The recording laid out as a trace (DESIGN §7): q [L, n_heads, T, hd],
  // k and v [L, n_kv_heads, T, hd], row-major. REQUIRES: every layer holds
  // the same number of positions (FailedPrecondition otherwise).
  absl::StatusOr<std::vector<float>> Queries() const;
  absl::StatusOr<std::vector<float>> Keys() const;
  absl::StatusOr<std::vector<float>> Values() const;
  // Writes dir/q.npy, dir/k.npy, dir/v.npy through eval::SaveTraceDir
  // (creating dir), so `kvsketch eval --trace dir` and `kvsketch calibrate
  // --trace dir` read it. FailedPrecondition if nothing was recorded.
  absl::Status WriteTraceDir(const std::string& dir) const;

 private:
  // [layer] -> [pos][heads][hd] as received.
  absl::StatusOr<std::vector<float>> Transpose(
      const std::vector<std::vector<float>>& rows, int heads) const;

  LlamaConfig model_;
  AttentionBackend* inner_;
  std::vector<std::vector<float>> q_, k_, v_;
};

}  // namespace kvsketch::llama

#endif  // KVSKETCH_CLIENT_LLAMA_BACKENDS_H_
