// kvsketch-loadgen: concurrent decode sessions against a kvsketch server;
// prints throughput and step-latency percentiles (JSON with --json).
#include <csignal>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "client/cli/args.h"
#include "client/cli/command.h"
#include "client/loadgen/loadgen.h"
#include "client/tensor_ref.h"

namespace kvsketch::client {
namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

std::vector<cli::OptionSpec> Flags() {
  const char* env = std::getenv("KVSKETCH_SERVER");
  return {
      {.name = "server",
       .value_name = "HOST:PORT",
       .default_value = env != nullptr && *env ? env : "127.0.0.1:50051",
       .help = "server address (env KVSKETCH_SERVER)"},
      {.name = "sessions",
       .value_name = "N",
       .default_value = "64",
       .help = "concurrent sessions"},
      {.name = "sessions-per-stream",
       .value_name = "N",
       .default_value = "1",
       .help = "sessions batched into one Decode stream and step"},
      {.name = "layers",
       .value_name = "L",
       .default_value = "1",
       .help = "layers per session (one entry per layer per step)"},
      {.name = "kv-heads",
       .value_name = "H",
       .default_value = "8",
       .help = "KV heads"},
      {.name = "query-heads",
       .value_name = "Q",
       .default_value = "8",
       .help = "query heads"},
      {.name = "head-dim",
       .value_name = "D",
       .default_value = "128",
       .help = "head dimension (values too)"},
      {.name = "spec",
       .value_name = "SPEC",
       .default_value = "exact",
       .help = "approximator spec"},
      {.name = "prefill",
       .value_name = "T",
       .default_value = "0",
       .help = "context tokens appended before measuring"},
      {.name = "rate",
       .value_name = "R",
       .default_value = "0",
       .help = "target steps/s per session, open loop (0 = closed loop)"},
      {.name = "max-in-flight",
       .value_name = "N",
       .default_value = "16",
       .help = "outstanding steps per stream in open loop"},
      {.name = "duration",
       .value_name = "DURATION",
       .default_value = "30s",
       .help = "measured run time"},
      {.name = "warmup",
       .value_name = "DURATION",
       .default_value = "1s",
       .help = "unmeasured run time before it"},
      {.name = "dtype",
       .value_name = "f32|f16|bf16",
       .default_value = "f32",
       .help = "wire dtype"},
      {.name = "seed",
       .value_name = "N",
       .default_value = "1",
       .help = "random seed of the data"},
      {.name = "session-prefix",
       .value_name = "P",
       .default_value = "",
       .help =
           "session ids are P0, P1, ... (\"\" = a random \"lg-XXXXXXXX-\")"},
      {.name = "json", .help = "print one JSON object on stdout"},
      {.name = "reopen-streams",
       .help = "open a new stream after one ends RESOURCE_EXHAUSTED or "
               "UNAVAILABLE (counted), until the run ends"},
      {.name = "keep-sessions",
       .help = "do not delete the sessions at the end"},
      {.name = "quiet", .help = "no progress line"},
  };
}

int Main(int argc, char** argv) {
  std::vector<cli::OptionSpec> specs = Flags();
  for (cli::OptionSpec& s : cli::SecurityOptions()) specs.push_back(s);
  absl::StatusOr<cli::ParsedArgs> args =
      cli::ParseArgs(specs, absl::Span<const char* const>(argv + 1, argc - 1));
  auto usage_error = [](absl::string_view message) {
    std::cerr << "error: " << message << "\n(run with --help for usage)\n";
    return 2;
  };
  if (!args.ok()) return usage_error(args.status().message());
  if (args->help()) {
    std::cout << cli::FormatUsage(
        "kvsketch-loadgen", "[options]",
        "Runs concurrent decode sessions (one Decode step = one token for\n"
        "every layer of every session of a stream) and reports throughput\n"
        "and step latency, measured from each step's intended send time.\n"
        "Ctrl-C stops early and still prints the summary. Exit status: 0,\n"
        "1 if any step or stream failed (counted by code in the report),\n"
        "2 for bad flags.",
        specs);
    return 0;
  }
  if (!args->positional().empty()) {
    return usage_error(
        absl::StrCat("unexpected argument '", args->positional()[0], "'"));
  }
  LoadgenOptions o;
  o.server = args->Get("server");
  if (absl::Status s = cli::ApplySecurityOptions(*args, &o.client); !s.ok()) {
    return usage_error(s.message());
  }
  o.spec = args->Get("spec");
  o.session_prefix = args->Get("session-prefix");
  struct IntFlag {
    const char* name;
    int64_t min;
    int64_t* out;
  };
  int64_t sessions, per_stream, layers, kv, q, d, prefill, window, seed;
  for (const IntFlag& f :
       {IntFlag{"sessions", 1, &sessions},
        IntFlag{"sessions-per-stream", 1, &per_stream},
        IntFlag{"layers", 1, &layers}, IntFlag{"kv-heads", 1, &kv},
        IntFlag{"query-heads", 1, &q}, IntFlag{"head-dim", 1, &d},
        IntFlag{"prefill", 0, &prefill}, IntFlag{"max-in-flight", 1, &window},
        IntFlag{"seed", 0, &seed}}) {
    absl::StatusOr<int64_t> v = args->GetInt(f.name);
    if (!v.ok()) return usage_error(v.status().message());
    if (*v < f.min || *v > (int64_t{1} << 30)) {
      return usage_error(absl::StrCat("--", f.name, ": out of range: ", *v));
    }
    *f.out = *v;
  }
  o.sessions = static_cast<int>(sessions);
  o.sessions_per_stream = static_cast<int>(per_stream);
  o.layers = static_cast<int>(layers);
  o.kv_heads = static_cast<int>(kv);
  o.query_heads = static_cast<int>(q);
  o.head_dim = static_cast<int>(d);
  o.prefill = prefill;
  o.max_in_flight = static_cast<int>(window);
  o.seed = static_cast<uint64_t>(seed);
  absl::StatusOr<double> rate = args->GetDouble("rate");
  if (!rate.ok()) return usage_error(rate.status().message());
  o.rate = *rate;
  absl::StatusOr<absl::Duration> duration = args->GetDuration("duration");
  if (!duration.ok()) return usage_error(duration.status().message());
  o.duration = *duration;
  absl::StatusOr<absl::Duration> warmup = args->GetDuration("warmup");
  if (!warmup.ok()) return usage_error(warmup.status().message());
  o.warmup = *warmup;
  absl::StatusOr<v1::DType> dtype = ParseDType(args->Get("dtype"));
  if (!dtype.ok()) return usage_error(dtype.status().message());
  o.dtype = *dtype;
  o.keep_sessions = args->Flag("keep-sessions");
  o.reopen_streams = args->Flag("reopen-streams");
  if (args->Flag("quiet")) o.progress_interval = absl::ZeroDuration();

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  absl::StatusOr<LoadgenReport> report = RunLoadgen(o, &g_stop);
  if (!report.ok()) {
    if (absl::IsInvalidArgument(report.status()) &&
        report.status().message().rfind("--", 0) == 0) {
      return usage_error(report.status().message());
    }
    std::cerr << "error: " << absl::StatusCodeToString(report.status().code())
              << ": " << report.status().message() << "\n";
    return 1;
  }
  if (args->Flag("json")) {
    std::cout << ReportToJson(o, *report) << std::endl;
  } else {
    std::cout << ReportToText(o, *report) << std::flush;
  }
  return report->total_errors() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace kvsketch::client

int main(int argc, char** argv) { return kvsketch::client::Main(argc, argv); }
