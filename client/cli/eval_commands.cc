// `kvsketch eval` and `kvsketch calibrate` (issue #3 items 4 and 6): thin
// front ends over core/eval, run in-process (no server needed).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli/command.h"
#include "core/eval/calibrate.h"
#include "core/eval/harness.h"
#include "core/eval/report.h"
#include "core/eval/trace.h"
#include "core/registry.h"
#include "core/regression/correction_file.h"

namespace kvsketch::client::cli {
namespace {

constexpr char kDefaultSpecs[] =
    "exact;exact:store=f16;sketch;topk;topk:select=blocks;evict";

absl::StatusOr<std::vector<int64_t>> ParseList(const ParsedArgs& args,
                                               absl::string_view name) {
  std::vector<int64_t> out;
  for (absl::string_view piece :
       absl::StrSplit(args.Get(name), ',', absl::SkipWhitespace())) {
    int64_t x = 0;
    std::string p(piece);
    int64_t mult = 1;
    if (!p.empty() && (p.back() == 'K' || p.back() == 'k')) mult = 1024;
    if (!p.empty() && (p.back() == 'M' || p.back() == 'm')) mult = 1 << 20;
    if (mult != 1) p.pop_back();
    if (!absl::SimpleAtoi(p, &x) || x * mult < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": '", piece,
                       "' is not an integer >= 2 (suffix K or M allowed)"));
    }
    out.push_back(x * mult);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " is empty"));
  }
  return out;
}

struct CommonData {
  std::string trace_dir, synthetic;
  int64_t d = 0, queries = 0, seed = 0;
  double c0 = 0;
};

// Returns an exit code if the arguments are unusable, else -1.
int ParseCommon(const ParsedArgs& args, CommonData* c) {
  c->trace_dir = args.Get("trace");
  c->synthetic = args.Get("synthetic");
  if (!c->trace_dir.empty() && args.Has("synthetic")) {
    return UsageError("give either --trace or --synthetic, not both");
  }
  if (!c->trace_dir.empty()) c->synthetic.clear();
  if (c->trace_dir.empty()) {
    const auto& kinds = eval::SyntheticKinds();
    if (std::find(kinds.begin(), kinds.end(), c->synthetic) == kinds.end()) {
      return UsageError(absl::StrCat("--synthetic: unknown generator '",
                                     c->synthetic,
                                     "'; valid: ", absl::StrJoin(kinds, ", ")));
    }
  }
  auto d = args.GetInt("d");
  auto q = args.GetInt("queries");
  auto seed = args.GetInt("seed");
  auto c0 = args.GetDouble("c0");
  for (const absl::Status& s :
       {d.status(), q.status(), seed.status(), c0.status()}) {
    if (!s.ok()) return UsageError(s.message());
  }
  if (*d < 1 || *d > 4096) return UsageError("--d must be in [1, 4096]");
  if (*q < 1) return UsageError("--queries must be at least 1");
  if (!(*c0 > 0 && *c0 < 1)) return UsageError("--c0 must be in (0, 1)");
  c->d = *d;
  c->queries = *q;
  c->seed = *seed;
  c->c0 = *c0;
  return -1;
}

std::vector<OptionSpec> SourceOptions(const char* queries_help,
                                      const char* queries_default) {
  return {
      {.name = "trace",
       .value_name = "DIR",
       .help = "trace directory with q.npy [L,Hq,T,d], k.npy/v.npy "
               "[L,Hkv,T,d|dv]"},
      {.name = "synthetic",
       .value_name = "KIND",
       .default_value = "gaussian",
       .help = "generator when no --trace: gaussian|sinks|window|needles|"
               "planted"},
      {.name = "d",
       .value_name = "N",
       .default_value = "64",
       .help = "head dim of synthetic traces"},
      {.name = "queries",
       .value_name = "N",
       .default_value = queries_default,
       .help = queries_help},
      {.name = "seed",
       .value_name = "S",
       .default_value = "1",
       .help = "synthetic seed"},
      {.name = "c0",
       .value_name = "C",
       .default_value = "0.5",
       .help = "gaussian: logit spread sqrt(2(1-c0) ln n), support ~n^c0"},
  };
}

}  // namespace

std::vector<OptionSpec> EvalFlags() {
  std::vector<OptionSpec> o =
      SourceOptions("query rows scored per trace (per n), per head", "16");
  o.push_back({.name = "specs",
               .value_name = "LIST",
               .default_value = kDefaultSpecs,
               .help = "approximator specs separated by ';'"});
  o.push_back({.name = "n",
               .value_name = "LIST",
               .default_value = "1024,4096",
               .help = "synthetic trace lengths, e.g. 1K,4K,16K,1M"});
  o.push_back({.name = "warm",
               .value_name = "N",
               .default_value = "0",
               .help = "unscored Attend rows per trace, spread over the stream "
                       "(feeds query-driven policies such as evict)"});
  o.push_back({.name = "path",
               .value_name = "P",
               .default_value = "auto",
               .help = "stream (Append + Attend per query: the decode path), "
                       "prefill (Prefill in chunks: the bulk path; needs a "
                       "query per position: a --trace, or a planted "
                       "--synthetic kind), or auto (prefill for --trace, "
                       "stream for --synthetic)"});
  o.push_back({.name = "chunk",
               .value_name = "N",
               .default_value = "0",
               .help = "prefill path: tokens per Prefill call (0 = all)"});
  o.push_back({.name = "out",
               .value_name = "DIR",
               .help = "write eval.md, eval.csv, eval.json, eval_error.svg, "
                       "eval_memory.svg here"});
  o.push_back({.name = "correction",
               .value_name = "DIR",
               .help = "with --trace: a storage correction from kvsketch fit "
                       "--correct SPEC --out DIR; every spec equal to SPEC "
                       "gets a second row '<label> +fit' with the fitted "
                       "correction applied. On the fit's own trace, all rows "
                       "are scored only past its training tokens"});
  o.push_back({.name = "quiet", .help = "no progress line on stderr"});
  return o;
}

namespace {

// Same directory: compares canonical paths (false if either is unusable).
bool SameDirectory(const std::string& a, const std::string& b) {
  std::error_code ec1, ec2;
  const auto ca = std::filesystem::weakly_canonical(a, ec1);
  const auto cb = std::filesystem::weakly_canonical(b, ec2);
  return !ec1 && !ec2 && ca == cb;
}

// Restricts scoring to positions >= first (rows before it stay, unscored, so
// query-driven policies still see them).
void ScoreFrom(eval::Trace* t, int64_t first) {
  if (t->scored.empty()) t->scored.assign(t->m(), 1);
  for (int64_t i = 0; i < t->m(); ++i) {
    if (t->query_pos[i] < first) t->scored[i] = 0;
  }
}

}  // namespace

int RunEval(const ParsedArgs& args) {
  CommonData c;
  if (int rc = ParseCommon(args, &c); rc >= 0) return rc;
  std::vector<std::string> specs;
  for (absl::string_view s :
       absl::StrSplit(args.Get("specs"), ';', absl::SkipWhitespace())) {
    specs.emplace_back(absl::StripAsciiWhitespace(s));
    // Cross-parameter checks need a shape: the synthetic one, or a typical
    // head for a trace (shape-specific errors then surface as data errors).
    const int d = c.trace_dir.empty() ? static_cast<int>(c.d) : 64;
    const HeadShape shape{d, d, static_cast<float>(1 / std::sqrt(double(d)))};
    if (auto st = CreateApproximator(specs.back(), shape); !st.ok()) {
      return UsageError(absl::StrCat("--specs: ", st.status().message()));
    }
  }
  if (specs.empty()) return UsageError("--specs is empty");
  std::optional<regression::StorageCorrectionFile> correction;
  std::vector<eval::EvalSpec> eval_specs;
  for (const std::string& s : specs) eval_specs.push_back({s, s, nullptr});
  if (args.Has("correction")) {
    if (c.trace_dir.empty()) {
      return UsageError(
          "--correction needs --trace (a correction is fitted per head of a "
          "model's trace)");
    }
    auto f = regression::LoadStorageCorrection(args.Get("correction"));
    if (!f.ok()) return Failure(f.status());
    correction = std::move(*f);
    const regression::StorageCorrectionFile* file = &*correction;
    eval_specs.clear();
    bool matched = false;
    for (const std::string& s : specs) {
      eval_specs.push_back({s, s, nullptr});
      absl::StatusOr<std::string> canonical = CanonicalizeSpec(s);
      if (canonical.ok() && *canonical == file->base_spec) {
        matched = true;
        eval_specs.push_back(
            {absl::StrCat(s, " +fit"), s,
             [file](std::unique_ptr<Approximator> base, int layer, int kv) {
               return regression::WrapWithCorrection(*file, layer, kv,
                                                     std::move(base));
             }});
      }
    }
    if (!matched) {
      return UsageError(absl::StrCat(
          "--correction: the correction in ", args.Get("correction"),
          " is for '", file->base_spec,
          "', and no --specs entry is that spec (add it to --specs)"));
    }
  }
  std::vector<int64_t> ns;
  if (c.trace_dir.empty()) {
    auto parsed = ParseList(args, "n");
    if (!parsed.ok()) return UsageError(parsed.status().message());
    ns = *parsed;
  } else if (args.Has("n")) {
    return UsageError("--n applies to --synthetic only");
  }
  auto warm = args.GetInt("warm");
  if (!warm.ok()) return UsageError(warm.status().message());
  if (*warm < 0) return UsageError("--warm must be >= 0");
  eval::EvalOptions options;
  const std::string path = args.Get("path");
  if (path == "prefill" || (path == "auto" && !c.trace_dir.empty())) {
    options.path = eval::EvalPath::kPrefill;
  } else if (path != "stream" && path != "auto") {
    return UsageError(absl::StrCat("--path: '", path,
                                   "' is not one of stream, prefill, auto"));
  }
  const bool prefill = options.path == eval::EvalPath::kPrefill;
  if (prefill && c.trace_dir.empty() && c.synthetic == "gaussian") {
    return UsageError(
        "--path prefill needs a query at every position: use a planted "
        "--synthetic kind (sinks, window, needles, planted) or --trace");
  }
  if (prefill && *warm > 0) {
    return UsageError(
        "--warm applies to the stream path only (the prefill "
        "path computes every row)");
  }
  auto chunk = args.GetInt("chunk");
  if (!chunk.ok()) return UsageError(chunk.status().message());
  if (*chunk < 0) return UsageError("--chunk must be >= 0");
  options.chunk = *chunk;
  const std::string out_dir = args.Get("out");
  if (!out_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (ec) {
      return Failure(absl::UnavailableError(
          absl::StrCat(out_dir, ": cannot create: ", ec.message())));
    }
  }
  const bool quiet = args.Flag("quiet");
  std::vector<eval::EvalRow> rows;
  const size_t runs = c.trace_dir.empty() ? ns.size() : 1;
  for (size_t i = 0; i < runs; ++i) {
    absl::StatusOr<eval::Trace> trace =
        c.trace_dir.empty()
            ? eval::MakeSyntheticTrace(c.synthetic, ns[i], c.d, c.queries,
                                       c.seed, c.c0, *warm, prefill)
            : eval::LoadTraceDir(c.trace_dir);
    if (!trace.ok()) return Failure(trace.status());
    int64_t held_from = 0;  // first scored position (the correction's split)
    if (correction) {
      if (absl::Status st =
              regression::CheckCorrectionMatchesTrace(*correction, *trace);
          !st.ok()) {
        return Failure(st);
      }
      if (SameDirectory(c.trace_dir, correction->trace_dir) &&
          trace->n == correction->n) {
        held_from = correction->train_tokens;
      }
    }
    if (prefill) {
      if (held_from > 0) ScoreFrom(&*trace, held_from);
      eval::MarkScoredQueries(&*trace, c.queries);
    } else {
      eval::SubsampleQueries(&*trace, c.queries, *warm);
      if (held_from > 0) ScoreFrom(&*trace, held_from);
    }
    if (correction) {
      int64_t scored = 0, first = -1;
      for (int64_t r = 0; r < trace->m(); ++r) {
        if (!trace->is_scored(r)) continue;
        if (first < 0) first = trace->query_pos[r];
        ++scored;
      }
      if (held_from > 0) {
        std::printf(
            "held out: the correction was fitted on positions 0..%lld of "
            "this trace; every row (untrained and +fit) is scored only at "
            "positions >= %lld (%lld positions per head, first %lld)\n\n",
            static_cast<long long>(held_from - 1),
            static_cast<long long>(held_from), static_cast<long long>(scored),
            static_cast<long long>(first));
      } else {
        std::printf(
            "held out: the correction was fitted on another trace (%s); "
            "every position of this one is held out (%lld positions per "
            "head scored)\n\n",
            correction->trace_name.c_str(), static_cast<long long>(scored));
      }
      std::fflush(stdout);
    }
    auto progress = [&](const std::string& what) {
      if (!quiet)
        std::cerr << "\r\033[K[" << (i + 1) << "/" << runs << "] " << what
                  << std::flush;
    };
    auto r = eval::RunEval(*trace, eval_specs, options, progress);
    if (!quiet) std::cerr << "\r\033[K" << std::flush;
    if (!r.ok()) return Failure(r.status());
    rows.insert(rows.end(), r->begin(), r->end());
  }
  const std::string md = eval::FormatMarkdown(rows);
  std::cout << md;
  if (!out_dir.empty()) {
    const std::pair<const char*, std::string> files[] = {
        {"eval.md", md + eval::MarkdownLegend()},
        {"eval.csv", eval::FormatCsv(rows)},
        {"eval.json", eval::FormatJson(rows)},
        {"eval_error.svg", eval::ErrorPlotSvg(rows)},
        {"eval_memory.svg", eval::MemoryPlotSvg(rows)},
    };
    for (const auto& [name, text] : files) {
      if (auto s = WriteFileAtomically(out_dir + "/" + name, text); !s.ok()) {
        return Failure(s);
      }
    }
    if (!quiet)
      std::cerr << "wrote " << out_dir << "/eval.{md,csv,json} and "
                << "eval_{error,memory}.svg" << std::endl;
  }
  return kExitOk;
}

std::vector<OptionSpec> CalibrateFlags() {
  std::vector<OptionSpec> o =
      SourceOptions("query rows per prefix length (geometric mean of k)", "8");
  o.push_back({.name = "tau",
               .value_name = "T",
               .default_value = "0.05",
               .help = "softmax mass allowed to be dropped"});
  o.push_back({.name = "prefixes",
               .value_name = "LIST",
               .help = "prefix lengths (default: T/16,T/8,T/4,T/2,T for a "
                       "trace; 1K,4K,16K,64K synthetic)"});
  o.push_back({.name = "json", .help = "print JSON"});
  return o;
}

int RunCalibrate(const ParsedArgs& args) {
  CommonData c;
  if (int rc = ParseCommon(args, &c); rc >= 0) return rc;
  auto tau = args.GetDouble("tau");
  if (!tau.ok()) return UsageError(tau.status().message());
  if (!(*tau > 0 && *tau < 1)) return UsageError("--tau must be in (0, 1)");
  std::vector<int64_t> prefixes;
  if (args.Has("prefixes")) {
    auto p = ParseList(args, "prefixes");
    if (!p.ok()) return UsageError(p.status().message());
    prefixes = *p;
  }
  std::vector<eval::KTauSample> samples;
  if (!c.trace_dir.empty()) {
    auto trace = eval::LoadTraceDir(c.trace_dir);
    if (!trace.ok()) return Failure(trace.status());
    if (prefixes.empty()) {
      for (int div : {16, 8, 4, 2, 1}) {
        if (trace->n / div >= 2) prefixes.push_back(trace->n / div);
      }
    }
    auto s =
        eval::MeasureKTau(*trace, *tau, prefixes, static_cast<int>(c.queries));
    if (!s.ok()) return Failure(s.status());
    samples = std::move(*s);
  } else {
    if (prefixes.empty()) prefixes = {1024, 4096, 16384, 65536};
    for (int64_t p : prefixes) {
      auto trace = eval::MakeSyntheticTrace(c.synthetic, p, c.d, c.queries,
                                            c.seed, c.c0);
      if (!trace.ok()) return Failure(trace.status());
      auto s =
          eval::MeasureKTau(*trace, *tau, {p}, static_cast<int>(c.queries));
      if (!s.ok()) return Failure(s.status());
      samples.insert(samples.end(), s->begin(), s->end());
    }
  }
  auto fits = eval::FitCalibration(samples);
  if (!fits.ok()) return Failure(fits.status());
  std::cout << (args.Flag("json")
                    ? eval::FormatCalibrationJson(*fits, samples, *tau)
                    : eval::FormatCalibrationText(*fits, *tau));
  return kExitOk;
}

}  // namespace kvsketch::client::cli
