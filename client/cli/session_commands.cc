// `kvsketch create | list | get | delete`: session lifecycle.
#include <cstdio>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli/command.h"

namespace kvsketch::client::cli {
namespace {

OptionSpec JsonFlag() {
  return {.name = "json", .help = "print the result as JSON"};
}

// --layer-spec L=SPEC -> (L, SPEC).
absl::Status ParseLayerSpec(absl::string_view text, int32_t* layer,
                            std::string* spec) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos ||
      !absl::SimpleAtoi(text.substr(0, eq), layer) || *layer < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--layer-spec: expected LAYER=SPEC (e.g. 3=sketch:features=64), got '",
        text, "'"));
  }
  *spec = std::string(text.substr(eq + 1));
  return absl::OkStatus();
}

std::string TokensSummary(const v1::SessionInfo& info) {
  if (info.tokens_per_layer().empty()) return "0";
  int64_t lo = info.tokens_per_layer(0), hi = lo;
  for (int64_t t : info.tokens_per_layer()) {
    lo = std::min(lo, t);
    hi = std::max(hi, t);
  }
  return lo == hi ? absl::StrCat(lo) : absl::StrCat(lo, "-", hi);
}

void PrintTable(const std::vector<v1::SessionInfo>& sessions) {
  const std::string header = absl::StrFormat(
      "%-36s %6s %8s %8s %8s %10s %12s  %s", "SESSION_ID", "LAYERS", "KV_HEADS",
      "Q_HEADS", "HEAD_DIM", "TOKENS", "STATE_BYTES", "SPEC");
  std::cout << header << "\n";
  for (const v1::SessionInfo& s : sessions) {
    const v1::SessionConfig& c = s.config();
    std::cout << absl::StrFormat(
        "%-36s %6d %8d %8d %8d %10s %12d  %s\n", s.session_id(), c.num_layers(),
        c.num_kv_heads(), c.num_query_heads(), c.head_dim(), TokensSummary(s),
        s.state_bytes(), c.spec());
  }
}

void PrintDetails(const v1::SessionInfo& s) {
  const v1::SessionConfig& c = s.config();
  std::cout << "session_id:        " << s.session_id() << "\n"
            << "num_layers:        " << c.num_layers() << "\n"
            << "num_kv_heads:      " << c.num_kv_heads() << "\n"
            << "num_query_heads:   " << c.num_query_heads() << "\n"
            << "head_dim:          " << c.head_dim() << "\n"
            << "value_dim:         " << c.value_dim() << "\n"
            << "scale:             " << c.scale() << "\n"
            << "spec:              " << c.spec() << "\n"
            << "max_tokens:        " << c.max_tokens() << "\n"
            << "tokens_per_layer:  " << absl::StrJoin(s.tokens_per_layer(), " ")
            << "\n"
            << "state_bytes:       " << s.state_bytes() << "\n";
  for (int l = 0; l < s.canonical_layer_specs_size(); ++l) {
    std::cout << "layer " << l << " spec:" << std::string(l < 10 ? 7 : 6, ' ')
              << s.canonical_layer_specs(l) << "\n";
  }
}

}  // namespace

std::vector<OptionSpec> CreateFlags() {
  return WithCommon({
      {.name = "layers",
       .value_name = "L",
       .help = "number of layers",
       .required = true},
      {.name = "kv-heads",
       .value_name = "H",
       .help = "KV heads per layer",
       .required = true},
      {.name = "query-heads",
       .value_name = "Q",
       .default_value = "0",
       .help = "query heads (multiple of --kv-heads; 0 = kv-heads)"},
      {.name = "head-dim",
       .value_name = "D",
       .help = "key/query dimension",
       .required = true},
      {.name = "value-dim",
       .value_name = "DV",
       .default_value = "0",
       .help = "value dimension (0 = head-dim)"},
      {.name = "scale",
       .value_name = "S",
       .default_value = "0",
       .help = "softmax scale (0 = 1/sqrt(head-dim))"},
      {.name = "spec",
       .value_name = "SPEC",
       .default_value = "",
       .help = "approximator spec for every layer (\"\" = server default)"},
      {.name = "layer-spec",
       .value_name = "L=SPEC",
       .help = "spec override for one layer",
       .repeated = true},
      {.name = "max-tokens",
       .value_name = "N",
       .default_value = "0",
       .help = "max tokens per layer (0 = server limit)"},
      {.name = "id",
       .value_name = "ID",
       .default_value = "",
       .help = "session id to use (\"\" = server chooses)"},
      JsonFlag(),
  });
}

int RunCreate(const ParsedArgs& args) {
  v1::SessionConfig config;
  struct IntField {
    const char* flag;
    void (v1::SessionConfig::*set)(int32_t);
  };
  for (const IntField& f :
       {IntField{"layers", &v1::SessionConfig::set_num_layers},
        IntField{"kv-heads", &v1::SessionConfig::set_num_kv_heads},
        IntField{"query-heads", &v1::SessionConfig::set_num_query_heads},
        IntField{"head-dim", &v1::SessionConfig::set_head_dim},
        IntField{"value-dim", &v1::SessionConfig::set_value_dim}}) {
    absl::StatusOr<int64_t> v = args.GetInt(f.flag);
    if (!v.ok()) return UsageError(v.status().message());
    if (*v < 0 || *v > (int64_t{1} << 30)) {
      return UsageError(absl::StrCat("--", f.flag, ": out of range: ", *v));
    }
    (config.*f.set)(static_cast<int32_t>(*v));
  }
  absl::StatusOr<double> scale = args.GetDouble("scale");
  if (!scale.ok()) return UsageError(scale.status().message());
  config.set_scale(static_cast<float>(*scale));
  absl::StatusOr<int64_t> max_tokens = args.GetInt("max-tokens");
  if (!max_tokens.ok()) return UsageError(max_tokens.status().message());
  config.set_max_tokens(*max_tokens);
  config.set_spec(args.Get("spec"));
  for (const std::string& text : args.GetAll("layer-spec")) {
    int32_t layer = 0;
    std::string spec;
    if (absl::Status s = ParseLayerSpec(text, &layer, &spec); !s.ok()) {
      return UsageError(s.message());
    }
    (*config.mutable_layer_specs())[layer] = spec;
  }
  auto client = MakeClient(args);
  if (client == nullptr) return kExitUsage;
  absl::StatusOr<v1::SessionInfo> info =
      client->CreateSession(config, args.Get("id"));
  if (!info.ok()) return Failure(info.status());
  if (args.Flag("json")) {
    PrintJson(*info);
  } else {
    std::cout << info->session_id() << "\n";
  }
  return kExitOk;
}

std::vector<OptionSpec> ListFlags() {
  return WithCommon({
      {.name = "page-size",
       .value_name = "N",
       .default_value = "0",
       .help = "sessions per ListSessions page (0 = server default)"},
      JsonFlag(),
  });
}

int RunList(const ParsedArgs& args) {
  absl::StatusOr<int64_t> page_size = args.GetInt("page-size");
  if (!page_size.ok()) return UsageError(page_size.status().message());
  auto client = MakeClient(args);
  if (client == nullptr) return kExitUsage;
  absl::StatusOr<std::vector<v1::SessionInfo>> sessions =
      client->ListSessions(static_cast<int>(*page_size));
  if (!sessions.ok()) return Failure(sessions.status());
  if (args.Flag("json")) {
    v1::ListSessionsResponse all;
    for (auto& s : *sessions) *all.add_sessions() = std::move(s);
    PrintJson(all);
  } else {
    PrintTable(*sessions);
  }
  return kExitOk;
}

std::vector<OptionSpec> GetFlags() { return WithCommon({JsonFlag()}); }

int RunGet(const ParsedArgs& args) {
  auto client = MakeClient(args);
  if (client == nullptr) return kExitUsage;
  absl::StatusOr<v1::SessionInfo> info =
      client->GetSession(args.positional()[0]);
  if (!info.ok()) return Failure(info.status());
  if (args.Flag("json")) {
    PrintJson(*info);
  } else {
    PrintDetails(*info);
  }
  return kExitOk;
}

std::vector<OptionSpec> DeleteFlags() { return WithCommon({}); }

int RunDelete(const ParsedArgs& args) {
  auto client = MakeClient(args);
  if (client == nullptr) return kExitUsage;
  if (absl::Status s = client->DeleteSession(args.positional()[0]); !s.ok()) {
    return Failure(s);
  }
  std::cout << "deleted " << args.positional()[0] << "\n";
  return kExitOk;
}

}  // namespace kvsketch::client::cli
