// `kvsketch llama` (issue #6 items 1-3): decodes a llama2.c checkpoint in
// C++ with every layer's attention served by kvsketch: by a server over the
// Decode stream (default) or in process (--local). --compare measures specs
// against local exact attention on the same sequence; --dump-trace writes
// the run's post-RoPE q/k/v as a trace for `kvsketch eval` / `calibrate`.
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cli/command.h"
#include "client/llama/backends.h"
#include "client/llama/checkpoint.h"
#include "client/llama/fidelity.h"
#include "client/llama/forward.h"
#include "client/llama/generate.h"
#include "core/registry.h"

namespace kvsketch::client::cli {
namespace {

using llama::LlamaConfig;

std::string DefaultCheckpoint() {
  const char* env = std::getenv("KVSKETCH_MODEL");
  return env != nullptr && *env ? env : "../shared/data/stories260K.bin";
}

// Progress on stderr, redrawn at most every 1% of a run (and at its end).
class Progress {
 public:
  explicit Progress(bool quiet) : quiet_(quiet) {}
  void Update(const std::string& what, int64_t done, int64_t total) {
    if (quiet_) return;
    const int64_t step = std::max<int64_t>(1, total / 100);
    if (done % step != 0 && done != total) return;
    std::cerr << "\r\033[K[llama] " << what << ": " << done << "/" << total
              << " positions" << std::flush;
  }
  void Clear() {
    if (!quiet_) std::cerr << "\r\033[K" << std::flush;
  }

 private:
  bool quiet_;
};

std::string ModelJson(const LlamaConfig& c) {
  return absl::StrFormat(
      "{\"dim\": %d, \"hidden_dim\": %d, \"n_layers\": %d, \"n_heads\": %d, "
      "\"n_kv_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, "
      "\"seq_len\": %d, \"shared_classifier\": %s}",
      c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim(),
      c.vocab_size, c.seq_len, c.shared_classifier ? "true" : "false");
}

std::string Quoted(absl::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

// Every spec must build an approximator for this model's heads; a bad one
// is a usage error, reported before any run.
int CheckSpecs(const std::vector<std::string>& specs, const LlamaConfig& c,
               const char* flag) {
  const HeadShape shape{c.head_dim(), c.head_dim(),
                        1.0f / std::sqrt(static_cast<float>(c.head_dim()))};
  for (const std::string& spec : specs) {
    if (auto a = CreateApproximator(spec, shape); !a.ok()) {
      return UsageError(absl::StrCat(flag, ": ", a.status().message()));
    }
  }
  return -1;
}

}  // namespace

std::vector<OptionSpec> LlamaFlags() {
  return WithCommon({
      {.name = "checkpoint",
       .value_name = "FILE",
       .default_value = DefaultCheckpoint(),
       .help = "llama2.c checkpoint (legacy run.c format); default "
               "$KVSKETCH_MODEL, else ../shared/data/stories260K.bin "
               "relative to the working directory (the repo root)"},
      {.name = "spec",
       .value_name = "SPEC",
       .default_value = "exact",
       .help = "approximator spec for every layer when generating"},
      {.name = "tokens",
       .value_name = "N",
       .default_value = "256",
       .help = "tokens to generate after the prompt (prompt length + N - 1 "
               "<= the model's seq_len)"},
      {.name = "temperature",
       .value_name = "T",
       .default_value = "1.0",
       .help = "sampling temperature; 0 = greedy argmax"},
      {.name = "seed",
       .value_name = "S",
       .default_value = "1",
       .help = "sampling seed"},
      {.name = "prompt",
       .value_name = "FILE",
       .help = "prompt token ids, whitespace-separated (default: BOS, id 1; "
               "the tokenizer is not shipped, so ids only)"},
      {.name = "local",
       .help = "attention in-process (a SessionState) instead of on the "
               "server"},
      {.name = "remote",
       .help = "with --compare: run the specs on the server (also implied "
               "by an explicit --server); generation uses the server unless "
               "--local"},
      {.name = "compare",
       .value_name = "LIST",
       .help = "specs separated by ';': generate with local exact attention, "
               "re-run the same ids through each spec (in-process unless "
               "--remote) and print greedy agreement, mean KL, perplexity, "
               "state bytes and tokens/s"},
      {.name = "dump-trace",
       .value_name = "DIR",
       .help = "write the run's post-RoPE q.npy [L,Hq,T,hd], k.npy/v.npy "
               "[L,Hkv,T,hd] (for kvsketch eval/calibrate --trace DIR)"},
      {.name = "json", .help = "print JSON on stdout"},
      {.name = "quiet", .help = "no progress or summary on stderr"},
  });
}

int RunLlama(const ParsedArgs& args) {
  auto tokens = args.GetInt("tokens");
  auto temperature = args.GetDouble("temperature");
  auto seed = args.GetInt("seed");
  for (const absl::Status& s :
       {tokens.status(), temperature.status(), seed.status()}) {
    if (!s.ok()) return UsageError(s.message());
  }
  if (*tokens < 1) return UsageError("--tokens must be at least 1");
  if (!std::isfinite(*temperature) || *temperature < 0) {
    return UsageError("--temperature must be a finite value >= 0");
  }
  if (args.Flag("local") && args.Flag("remote")) {
    return UsageError("give either --local or --remote, not both");
  }
  const bool compare = args.Has("compare");
  if (compare && args.Has("spec")) {
    return UsageError("--spec applies to generation; --compare takes the list");
  }
  if (args.Flag("local") && args.Has("server")) {
    return UsageError("--local and --server contradict each other");
  }
  std::vector<std::string> specs;
  if (compare) {
    for (absl::string_view s :
         absl::StrSplit(args.Get("compare"), ';', absl::SkipWhitespace())) {
      specs.emplace_back(absl::StripAsciiWhitespace(s));
    }
    if (specs.empty()) return UsageError("--compare is empty");
  } else {
    specs.push_back(args.Get("spec"));
  }
  for (const std::string& spec : specs) {
    if (auto c = CanonicalizeSpec(spec); !c.ok()) {
      return UsageError(absl::StrCat(compare ? "--compare: " : "--spec: ",
                                     c.status().message()));
    }
  }
  const bool quiet = args.Flag("quiet");
  const bool json = args.Flag("json");
  const bool remote =
      compare ? args.Flag("remote") || args.Has("server") : !args.Flag("local");
  std::unique_ptr<AttentionClient> client;
  if (remote) {
    client = MakeClient(args);
    if (client == nullptr) return kExitUsage;
  }

  const std::string path = args.Get("checkpoint");
  absl::StatusOr<llama::LlamaCheckpoint> checkpoint =
      llama::LoadCheckpoint(path);
  if (!checkpoint.ok()) return Failure(checkpoint.status());
  llama::LlamaModel model(std::move(*checkpoint));
  const LlamaConfig& c = model.config();
  if (int rc = CheckSpecs(specs, c, compare ? "--compare" : "--spec");
      rc >= 0) {
    return rc;
  }
  std::vector<int> prompt;
  if (args.Has("prompt")) {
    absl::StatusOr<std::string> text = ReadFile(args.Get("prompt"));
    if (!text.ok()) return Failure(text.status());
    auto ids = llama::ParsePromptIds(*text, c.vocab_size);
    if (!ids.ok()) {
      return Failure(absl::InvalidArgumentError(
          absl::StrCat(args.Get("prompt"), ": ", ids.status().message())));
    }
    prompt = std::move(*ids);
  } else {
    prompt.push_back(llama::kBosToken);
  }
  if (auto s = llama::CheckGenerationLength(c, static_cast<int>(prompt.size()),
                                            *tokens);
      !s.ok()) {
    return UsageError(absl::StrCat("--", s.message()));
  }
  llama::GenerateOptions gen;
  gen.tokens = static_cast<int>(*tokens);
  gen.temperature = *temperature;
  gen.seed = static_cast<uint64_t>(*seed);
  Progress progress(quiet);
  const std::string trace_dir = args.Get("dump-trace");
  const std::string where =
      remote ? absl::StrCat("server ", args.Get("server")) : "in-process";

  if (compare) {
    llama::FidelityOptions options;
    options.generate = gen;
    options.prompt = prompt;
    options.specs = specs;
    options.factory = remote ? llama::RemoteBackendFactory(client.get(), c)
                             : llama::LocalBackendFactory(c);
    options.trace_dir = trace_dir;
    options.progress = [&](const std::string& what, int64_t done,
                           int64_t total) {
      progress.Update(what, done, total);
    };
    absl::StatusOr<llama::FidelityReport> report =
        llama::RunFidelity(model, options);
    progress.Clear();
    if (!report.ok()) return Failure(report.status());
    const llama::Generation& g = report->reference;
    if (json) {
      std::cout << absl::StrFormat(
          "{\"checkpoint\": %s, \"model\": %s, \"attention\": %s, "
          "\"prompt_len\": %d, \"tokens\": %d, \"temperature\": %.17g, "
          "\"seed\": %d, \"ids\": [%s], \"rows\": %s}\n",
          Quoted(path), ModelJson(c), Quoted(where), g.prompt_len,
          g.ids.size() - g.prompt_len, *temperature, *seed,
          absl::StrJoin(g.ids, ", "),
          llama::FormatFidelityRowsJson(report->rows));
    } else {
      std::cout << absl::StrFormat(
          "reference: local exact, %d ids (prompt %d + %d generated, "
          "temperature %g, seed %d), %d scored positions; specs %s, "
          "teacher-forced on the same ids\n\n",
          g.ids.size(), g.prompt_len, g.ids.size() - g.prompt_len, *temperature,
          *seed, report->rows[0].metrics.positions, where);
      std::cout << llama::FormatFidelityMarkdown(report->rows);
    }
    if (!quiet && !trace_dir.empty()) {
      std::cerr << "wrote " << trace_dir << "/{q,k,v}.npy (" << g.positions
                << " positions)" << std::endl;
    }
    return kExitOk;
  }

  // Generation through one backend.
  std::unique_ptr<llama::AttentionBackend> backend;
  llama::RemoteBackend* remote_backend = nullptr;
  llama::LocalBackend* local_backend = nullptr;
  std::string spec;
  if (remote) {
    auto b = llama::RemoteBackend::Create(client.get(), c, specs[0]);
    if (!b.ok()) return Failure(b.status());
    remote_backend = b->get();
    spec = (*b)->spec();
    backend = std::move(*b);
  } else {
    auto b = llama::LocalBackend::Create(c, specs[0]);
    if (!b.ok()) return Failure(b.status());
    local_backend = b->get();
    spec = (*b)->spec();
    backend = std::move(*b);
  }
  llama::RecordingBackend recorder(c, backend.get());
  llama::AttentionBackend& used =
      trace_dir.empty() ? *backend
                        : static_cast<llama::AttentionBackend&>(recorder);
  gen.progress = [&](int64_t done, int64_t total) {
    progress.Update(spec, done, total);
  };
  absl::StatusOr<llama::Generation> g =
      llama::Generate(model, used, prompt, gen);
  progress.Clear();
  if (!g.ok()) return Failure(g.status());
  int64_t state_bytes = 0;
  if (remote_backend != nullptr) {
    absl::StatusOr<int64_t> bytes = remote_backend->StateBytes();
    if (!bytes.ok()) return Failure(bytes.status());
    state_bytes = *bytes;
    if (absl::Status s = remote_backend->Close(); !s.ok()) return Failure(s);
  } else {
    state_bytes = local_backend->StateBytes();
  }
  if (!trace_dir.empty()) {
    if (absl::Status s = recorder.WriteTraceDir(trace_dir); !s.ok()) {
      return Failure(s);
    }
  }
  const double tokens_per_s = g->positions / std::max(g->seconds, 1e-9);
  if (json) {
    std::cout << absl::StrFormat(
        "{\"checkpoint\": %s, \"model\": %s, \"spec\": %s, \"attention\": %s, "
        "\"prompt_len\": %d, \"tokens\": %d, \"positions\": %d, "
        "\"seconds\": %.6g, \"tokens_per_s\": %.6g, \"state_bytes\": %d, "
        "\"ids\": [%s]}\n",
        Quoted(path), ModelJson(c), Quoted(spec), Quoted(where), g->prompt_len,
        g->ids.size() - g->prompt_len, g->positions, g->seconds, tokens_per_s,
        state_bytes, absl::StrJoin(g->ids, ", "));
  } else {
    std::cout << absl::StrJoin(g->ids, " ") << "\n";
  }
  if (!quiet) {
    std::cerr << absl::StrFormat(
        "generated %d tokens after a prompt of %d: %d positions in %.3f s, "
        "%.0f tokens/s; attention %s (%s), state %d bytes\n",
        g->ids.size() - g->prompt_len, g->prompt_len, g->positions, g->seconds,
        tokens_per_s, spec, where, state_bytes);
    if (!trace_dir.empty()) {
      std::cerr << "wrote " << trace_dir << "/{q,k,v}.npy (" << g->positions
                << " positions)" << std::endl;
    }
  }
  return kExitOk;
}

}  // namespace kvsketch::client::cli
