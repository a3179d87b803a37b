#include "client/llama/generate.h"

#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"

namespace kvsketch::llama {

absl::StatusOr<std::vector<int>> ParsePromptIds(absl::string_view text,
                                                int vocab_size) {
  std::vector<int> ids;
  int item = 0;
  for (absl::string_view piece :
       absl::StrSplit(text, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty())) {
    ++item;
    int id = 0;
    if (!absl::SimpleAtoi(piece, &id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt: item ", item, " ('", piece, "') is not an integer id"));
    }
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt: item ", item, " (id ", id,
                       ") is outside the vocabulary [0, ", vocab_size, ")"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) {
    return absl::InvalidArgumentError("prompt: no token ids");
  }
  return ids;
}

int Argmax(absl::Span<const float> logits) {
  KVSKETCH_CHECK(!logits.empty());
  int best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = static_cast<int>(i);
  }
  return best;
}

Sampler::Sampler(double temperature, uint64_t seed)
    : temperature_(temperature), state_(seed) {}

double Sampler::NextUniform() {
  // splitmix64 (Steele, Lea, Flood 2014): a full-period 64-bit stream.
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1p-53;
}

int Sampler::Sample(absl::Span<const float> logits) {
  if (temperature_ == 0) return Argmax(logits);
  const float max_logit = logits[Argmax(logits)];
  weights_.resize(logits.size());
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    weights_[i] = std::exp((double{logits[i]} - max_logit) / temperature_);
    total += weights_[i];
  }
  const double target = NextUniform() * total;
  double cumulative = 0;
  int last_positive = 0;
  for (size_t i = 0; i < weights_.size(); ++i) {
    if (weights_[i] <= 0) continue;
    cumulative += weights_[i];
    last_positive = static_cast<int>(i);
    if (target < cumulative) return last_positive;
  }
  return last_positive;  // rounding left target at the very top
}

absl::Status CheckGenerationLength(const LlamaConfig& config, int prompt_len,
                                   int64_t tokens) {
  if (tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokens: ", tokens, ", expected at least 1"));
  }
  const int64_t passes = prompt_len + tokens - 1;
  if (passes > config.seq_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokens: ", tokens, " after a prompt of ", prompt_len, " ids needs ",
        passes, " positions; the model's seq_len is ", config.seq_len,
        " (at most ", config.seq_len - prompt_len + 1, " tokens)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Generation> Generate(LlamaModel& model,
                                    AttentionBackend& backend,
                                    std::vector<int> prompt,
                                    const GenerateOptions& options) {
  const LlamaConfig& c = model.config();
  if (prompt.empty()) prompt.push_back(kBosToken);
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt: id ", prompt[i], " at index ", i,
                       " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (!std::isfinite(options.temperature) || options.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature: ", options.temperature,
                     ", expected a finite value >= 0"));
  }
  const int prompt_len = static_cast<int>(prompt.size());
  KVSKETCH_RETURN_IF_ERROR(
      CheckGenerationLength(c, prompt_len, options.tokens));
  Generation g;
  g.prompt_len = prompt_len;
  g.ids = std::move(prompt);
  g.positions = prompt_len + options.tokens - 1;
  if (options.keep_logits) g.logits.resize(g.positions * c.vocab_size);
  std::vector<float> scratch(options.keep_logits ? 0 : c.vocab_size);
  Sampler sampler(options.temperature, options.seed);
  const absl::Time start = absl::Now();
  for (int64_t pos = 0; pos < g.positions; ++pos) {
    absl::Span<float> logits =
        options.keep_logits
            ? absl::MakeSpan(g.logits.data() + pos * c.vocab_size, c.vocab_size)
            : absl::MakeSpan(scratch);
    KVSKETCH_RETURN_IF_ERROR(
        model.Forward(g.ids[pos], static_cast<int>(pos), backend, logits));
    // Inside the prompt the next id is given; the sampler only runs (and
    // only advances its stream) on generated positions.
    if (pos + 1 >= prompt_len) g.ids.push_back(sampler.Sample(logits));
    if (options.progress) options.progress(pos + 1, g.positions);
  }
  g.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return g;
}

absl::StatusOr<Scoring> TeacherForce(
    LlamaModel& model, AttentionBackend& backend, absl::Span<const int> ids,
    const std::function<void(int64_t, int64_t)>& progress) {
  const LlamaConfig& c = model.config();
  const int64_t passes = static_cast<int64_t>(ids.size()) - 1;
  if (passes < 1 || passes > c.seq_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("ids: ", ids.size(), " ids; teacher forcing needs 2 to ",
                     int64_t{c.seq_len} + 1));
  }
  Scoring s;
  s.logits.resize(passes * c.vocab_size);
  const absl::Time start = absl::Now();
  for (int64_t pos = 0; pos < passes; ++pos) {
    KVSKETCH_RETURN_IF_ERROR(model.Forward(
        ids[pos], static_cast<int>(pos), backend,
        absl::MakeSpan(s.logits.data() + pos * c.vocab_size, c.vocab_size)));
    if (progress) progress(pos + 1, passes);
  }
  s.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return s;
}

}  // namespace kvsketch::llama
