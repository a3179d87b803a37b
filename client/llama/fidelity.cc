#include "client/llama/fidelity.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/llama/backends.h"
#include "core/status_macros.h"

namespace kvsketch::llama {
namespace {

// log softmax(logits) in double, max-subtracted. O(vocab).
void LogSoftmax(const float* logits, int vocab, std::vector<double>* out) {
  out->resize(vocab);
  const float max_logit = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int i = 0; i < vocab; ++i)
    sum += std::exp(double{logits[i]} - max_logit);
  const double log_sum = std::log(sum);
  for (int i = 0; i < vocab; ++i) {
    (*out)[i] = double{logits[i]} - max_logit - log_sum;
  }
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", ch);
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

}  // namespace

absl::StatusOr<LogitComparison> CompareLogits(absl::Span<const float> reference,
                                              absl::Span<const float> test,
                                              int vocab_size,
                                              absl::Span<const int> ids,
                                              int64_t first_pos) {
  const int64_t passes = static_cast<int64_t>(ids.size()) - 1;
  if (vocab_size < 1 || passes < 1 ||
      reference.size() != static_cast<size_t>(passes * vocab_size) ||
      test.size() != reference.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "logits: reference ", reference.size(), " and test ", test.size(),
        " floats, expected (", ids.size(), " ids - 1) x vocab ", vocab_size));
  }
  if (first_pos < 0 || first_pos >= passes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "first_pos: ", first_pos, " leaves no position of [0, ", passes, ")"));
  }
  LogitComparison r;
  std::vector<double> lp, lq;
  double kl_sum = 0, nll_sum = 0;
  int64_t agree = 0;
  for (int64_t pos = first_pos; pos < passes; ++pos) {
    const float* ref = reference.data() + pos * vocab_size;
    const float* tst = test.data() + pos * vocab_size;
    const int next = ids[pos + 1];
    if (next < 0 || next >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("ids: id ", next, " at index ", pos + 1,
                       " is outside [0, ", vocab_size, ")"));
    }
    LogSoftmax(ref, vocab_size, &lp);
    LogSoftmax(tst, vocab_size, &lq);
    double kl = 0;
    for (int i = 0; i < vocab_size; ++i) {
      kl += std::exp(lp[i]) * (lp[i] - lq[i]);
    }
    // Rounding can leave a tiny negative sum when p ≈ q; KL >= 0 exactly.
    kl_sum += std::max(kl, 0.0);
    nll_sum -= lq[next];
    const auto ref_span = absl::MakeConstSpan(ref, vocab_size);
    const auto tst_span = absl::MakeConstSpan(tst, vocab_size);
    if (Argmax(ref_span) == Argmax(tst_span)) ++agree;
    ++r.positions;
  }
  r.agreement = static_cast<double>(agree) / r.positions;
  r.mean_kl = kl_sum / r.positions;
  r.perplexity = std::exp(nll_sum / r.positions);
  return r;
}

BackendFactory LocalBackendFactory(const LlamaConfig& model) {
  return [model](const std::string& spec) -> absl::StatusOr<SpecBackend> {
    KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<LocalBackend> local,
                              LocalBackend::Create(model, spec));
    SpecBackend b;
    b.canonical_spec = local->spec();
    LocalBackend* raw = local.get();
    b.state_bytes = [raw]() -> absl::StatusOr<int64_t> {
      return raw->StateBytes();
    };
    b.backend = std::move(local);
    return b;
  };
}

BackendFactory RemoteBackendFactory(client::AttentionClient* client,
                                    const LlamaConfig& model) {
  return
      [client, model](const std::string& spec) -> absl::StatusOr<SpecBackend> {
        KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<RemoteBackend> remote,
                                  RemoteBackend::Create(client, model, spec));
        SpecBackend b;
        b.canonical_spec = remote->spec();
        RemoteBackend* raw = remote.get();
        b.state_bytes = [raw] { return raw->StateBytes(); };
        b.close = [raw] { return raw->Close(); };
        b.backend = std::move(remote);
        return b;
      };
}

absl::StatusOr<FidelityReport> RunFidelity(LlamaModel& model,
                                           const FidelityOptions& options) {
  const LlamaConfig& c = model.config();
  auto progress_for = [&](const std::string& what) {
    std::function<void(int64_t, int64_t)> f;
    if (options.progress) {
      f = [&options, what](int64_t done, int64_t total) {
        options.progress(what, done, total);
      };
    }
    return f;
  };
  // The reference: local exact generates the sequence.
  KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<LocalBackend> exact,
                            LocalBackend::Create(c, "exact"));
  RecordingBackend recorder(c, exact.get());
  AttentionBackend* gen_backend =
      options.trace_dir.empty() ? static_cast<AttentionBackend*>(exact.get())
                                : &recorder;
  GenerateOptions gen = options.generate;
  gen.keep_logits = true;
  gen.progress = progress_for("exact (reference)");
  KVSKETCH_ASSIGN_OR_RETURN(Generation reference,
                            Generate(model, *gen_backend, options.prompt, gen));
  if (!options.trace_dir.empty()) {
    KVSKETCH_RETURN_IF_ERROR(recorder.WriteTraceDir(options.trace_dir));
  }
  const int64_t first = reference.prompt_len - 1;
  FidelityReport report;
  {
    FidelityRow row;
    row.spec = exact->spec();
    row.reference = true;
    KVSKETCH_ASSIGN_OR_RETURN(
        row.metrics, CompareLogits(reference.logits, reference.logits,
                                   c.vocab_size, reference.ids, first));
    row.state_bytes = exact->StateBytes();
    row.tokens_per_s = reference.positions / std::max(reference.seconds, 1e-9);
    report.rows.push_back(std::move(row));
  }
  for (const std::string& spec : options.specs) {
    absl::StatusOr<SpecBackend> b = options.factory(spec);
    if (!b.ok()) {
      return absl::Status(
          b.status().code(),
          absl::StrCat("spec '", spec, "': ", b.status().message()));
    }
    absl::StatusOr<Scoring> scored = TeacherForce(
        model, *b->backend, reference.ids, progress_for(b->canonical_spec));
    FidelityRow row;
    row.spec = b->canonical_spec;
    absl::Status status = scored.status();
    if (status.ok()) {
      absl::StatusOr<int64_t> bytes = b->state_bytes();
      status = bytes.status();
      if (bytes.ok()) row.state_bytes = *bytes;
    }
    // Close even after a failure, so no session stays on a server.
    if (b->close) {
      absl::Status closed = b->close();
      if (status.ok()) status = closed;
    }
    if (!status.ok()) {
      return absl::Status(
          status.code(), absl::StrCat("spec '", spec, "': ", status.message()));
    }
    KVSKETCH_ASSIGN_OR_RETURN(
        row.metrics, CompareLogits(reference.logits, scored->logits,
                                   c.vocab_size, reference.ids, first));
    row.tokens_per_s = reference.positions / std::max(scored->seconds, 1e-9);
    report.rows.push_back(std::move(row));
  }
  reference.logits.clear();
  reference.logits.shrink_to_fit();
  report.reference = std::move(reference);
  return report;
}

std::string FormatFidelityMarkdown(const std::vector<FidelityRow>& rows) {
  std::string out =
      "| spec | positions | greedy agreement | mean KL (nats) | perplexity "
      "| state bytes | tokens/s |\n"
      "|---|---:|---:|---:|---:|---:|---:|\n";
  for (const FidelityRow& r : rows) {
    absl::StrAppendFormat(
        &out, "| `%s`%s | %d | %.4f | %.3g | %.4f | %d | %.0f |\n", r.spec,
        r.reference ? " (reference)" : "", r.metrics.positions,
        r.metrics.agreement, r.metrics.mean_kl, r.metrics.perplexity,
        r.state_bytes, r.tokens_per_s);
  }
  return out;
}

std::string FormatFidelityRowsJson(const std::vector<FidelityRow>& rows) {
  std::vector<std::string> items;
  for (const FidelityRow& r : rows) {
    items.push_back(absl::StrFormat(
        "{\"spec\": %s, \"reference\": %s, \"positions\": %d, "
        "\"greedy_agreement\": %.17g, \"mean_kl\": %.17g, "
        "\"perplexity\": %.17g, \"state_bytes\": %d, \"tokens_per_s\": %.6g}",
        JsonString(r.spec), r.reference ? "true" : "false", r.metrics.positions,
        r.metrics.agreement, r.metrics.mean_kl, r.metrics.perplexity,
        r.state_bytes, r.tokens_per_s));
  }
  return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
}

}  // namespace kvsketch::llama
