// File: client/llama/fidelity.h
//
// How much an approximator changes a real model's predictions (issue #6 item
// 2): `kvsketch llama --compare "spec1;spec2"`.
//
// The local exact run generates the sequence (the reference). Each spec then
// re-runs the same ids by teacher forcing, so every position sees the same
// context and the per-position next-token distributions are comparable:
//
//   agreement   fraction of positions whose argmax equals the reference's
//   mean KL     mean over positions of KL(p_exact || p_spec) in nats
//   perplexity  exp(-mean log p_spec(next id)) of the reference's own
//               sample; the reference row gives the floor
//   state bytes the session's approximator state after the run
//   tokens/s    forward passes per second (model + attention + transport)
//
// Scored positions are those whose next id was generated (a prompt's given
// ids are not the model's sample). Distributions are softmax(logits) at
// temperature 1, in double. This end-to-end measure complements the per-head
// output errors of `kvsketch eval` the way the papers' LM perplexities
// complement their kernel errors (papers/C_D_E §E.4, papers/A_B §B.5).
// Cost: per spec, one teacher-forced run plus O(positions·vocab) here.
#ifndef KVSKETCH_CLIENT_LLAMA_FIDELITY_H_
#define KVSKETCH_CLIENT_LLAMA_FIDELITY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "client/attention_client.h"
#include "client/llama/forward.h"
#include "client/llama/generate.h"

namespace kvsketch::llama {

struct LogitComparison {
  int64_t positions = 0;  // scored
  double agreement = 0;
  double mean_kl = 0;
  double perplexity = 0;
};

// Compares reference and test logits, both [ids.size() - 1, vocab], over
// positions first_pos .. ids.size() - 2 (next id ids[pos + 1]).
// InvalidArgument for inconsistent sizes or an empty range.
absl::StatusOr<LogitComparison> CompareLogits(absl::Span<const float> reference,
                                              absl::Span<const float> test,
                                              int vocab_size,
                                              absl::Span<const int> ids,
                                              int64_t first_pos);

// One backend under test, and how to read its state size after the run.
struct SpecBackend {
  std::unique_ptr<AttentionBackend> backend;
  std::string canonical_spec;
  std::function<absl::StatusOr<int64_t>()> state_bytes;
  // Releases remote resources and reports errors doing so; may be empty.
  std::function<absl::Status()> close;
};
using BackendFactory =
    std::function<absl::StatusOr<SpecBackend>(const std::string& spec)>;

// In-process SessionState backends (LocalBackend).
BackendFactory LocalBackendFactory(const LlamaConfig& model);
// Sessions on a server (RemoteBackend). `client` must outlive the backends.
BackendFactory RemoteBackendFactory(client::AttentionClient* client,
                                    const LlamaConfig& model);

struct FidelityRow {
  std::string spec;  // canonical
  bool reference = false;
  LogitComparison metrics;
  int64_t state_bytes = 0;
  double tokens_per_s = 0;
};

struct FidelityReport {
  Generation reference;           // the exact run's ids (logits dropped)
  std::vector<FidelityRow> rows;  // the reference first, then each spec
};

struct FidelityOptions {
  GenerateOptions generate;  // keep_logits is forced on
  std::vector<int> prompt;   // empty: BOS
  std::vector<std::string> specs;
  BackendFactory factory;  // for the specs (the reference is local exact)
  // Non-empty: the reference run's q/k/v are written there as a trace.
  std::string trace_dir;
  // Called as (what, passes done, passes total) while a run goes.
  std::function<void(const std::string&, int64_t, int64_t)> progress;
};

absl::StatusOr<FidelityReport> RunFidelity(LlamaModel& model,
                                           const FidelityOptions& options);

// A Markdown table, one row per FidelityRow.
std::string FormatFidelityMarkdown(const std::vector<FidelityRow>& rows);
// JSON array of row objects.
std::string FormatFidelityRowsJson(const std::vector<FidelityRow>& rows);

}  // namespace kvsketch::llama

#endif  // KVSKETCH_CLIENT_LLAMA_FIDELITY_H_
