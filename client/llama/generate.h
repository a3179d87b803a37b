// File: client/llama/generate.h
//
// Token generation and teacher-forced scoring with a LlamaModel over any
// AttentionBackend (issue #6 items 1 and 2). The tokenizer is not shipped
// with the checkpoints, so everything works on token ids: a sequence starts
// at BOS (id 1) or at prompt ids read from a file.
//
// Positions: a prompt of P ids and N generated tokens make P + N ids and
// P + N - 1 forward passes (position p feeds ids[p] and yields the
// distribution of ids[p + 1]; the last generated id is never fed), so a
// model with context seq_len generates at most seq_len - P + 1 tokens.
//
// Sampling: temperature 0 takes the argmax (first on ties); otherwise
// softmax(logits / temperature) in double and one uniform draw from a
// splitmix64 stream seeded by `seed`, inverted through the cumulative sum.
// The generator is ours (not <random>'s distributions, which differ between
// standard libraries), so ids depend only on the logits and the seed.
#ifndef KVSKETCH_CLIENT_LLAMA_GENERATE_H_
#define KVSKETCH_CLIENT_LLAMA_GENERATE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "client/llama/forward.h"

namespace kvsketch::llama {

// llama2.c's beginning-of-sequence id.
inline constexpr int kBosToken = 1;

// Whitespace-separated decimal ids. InvalidArgument naming the item (1-based)
// for a non-integer or an id outside [0, vocab_size), or for no ids at all.
absl::StatusOr<std::vector<int>> ParsePromptIds(absl::string_view text,
                                                int vocab_size);

// First index of the largest logit. REQUIRES: logits non-empty.
int Argmax(absl::Span<const float> logits);

class Sampler {
 public:
  // REQUIRES: temperature finite and >= 0 (Generate checks it).
  Sampler(double temperature, uint64_t seed);
  // O(vocab).
  int Sample(absl::Span<const float> logits);

 private:
  double NextUniform();  // [0, 1), 53 bits

  double temperature_;
  uint64_t state_;
  std::vector<double> weights_;
};

struct GenerateOptions {
  int tokens = 256;          // ids to generate after the prompt, >= 1
  double temperature = 1.0;  // 0: greedy
  uint64_t seed = 1;
  bool keep_logits = false;  // fill Generation::logits
  // Called after each forward pass with (passes done, passes total).
  std::function<void(int64_t, int64_t)> progress;
};

struct Generation {
  std::vector<int> ids;  // prompt, then the generated ids
  int prompt_len = 0;
  int64_t positions = 0;      // forward passes: ids.size() - 1
  std::vector<float> logits;  // [positions, vocab] when keep_logits
  double seconds = 0;         // wall time of the passes (incl. sampling)
};

// InvalidArgument naming "tokens" unless 1 <= tokens and the passes
// prompt_len + tokens - 1 fit in the model's seq_len.
absl::Status CheckGenerationLength(const LlamaConfig& config, int prompt_len,
                                   int64_t tokens);

// Generates from `prompt` (empty: {kBosToken}); the backend must be fresh
// (no position yet). InvalidArgument for a bad option or prompt id; else
// the model's or backend's error (the backend then holds a partial
// sequence and should be discarded).
absl::StatusOr<Generation> Generate(LlamaModel& model,
                                    AttentionBackend& backend,
                                    std::vector<int> prompt,
                                    const GenerateOptions& options);

struct Scoring {
  std::vector<float> logits;  // [ids.size() - 1, vocab]
  double seconds = 0;
};

// Teacher forcing: feeds ids[0 .. n-2] at positions 0 .. n-2 through a
// fresh backend and keeps every position's logits. InvalidArgument for
// fewer than 2 ids or more than seq_len + 1.
absl::StatusOr<Scoring> TeacherForce(
    LlamaModel& model, AttentionBackend& backend, absl::Span<const int> ids,
    const std::function<void(int64_t, int64_t)>& progress = nullptr);

}  // namespace kvsketch::llama

#endif  // KVSKETCH_CLIENT_LLAMA_GENERATE_H_
