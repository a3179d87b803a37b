// `kvsketch append | attend`: moving tensors between .npy files and a
// session.
#include <cmath>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli/command.h"
#include "core/io/npy.h"

namespace kvsketch::client::cli {
namespace {

// Messages are cut to about this many wire bytes when --chunk-tokens is 0,
// under both gRPC's default 4 MiB limit and the server's flag.
constexpr int64_t kAutoChunkBytes = int64_t{2} << 20;
// Inputs above this many bytes get a progress line on stderr.
constexpr int64_t kProgressBytes = int64_t{16} << 20;

TensorRef Ref(const NpyArray& a) { return TensorRef{a.shape, a.data}; }

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

std::vector<OptionSpec> AppendFlags() {
  return WithCommon({
      {.name = "session",
       .value_name = "ID",
       .help = "session id",
       .required = true},
      {.name = "keys",
       .value_name = "FILE",
       .help = ".npy keys [kv_heads, T, d] or [layers, kv_heads, T, d]",
       .required = true},
      {.name = "values",
       .value_name = "FILE",
       .help = ".npy values, same layout with dv",
       .required = true},
      {.name = "layer",
       .value_name = "L",
       .default_value = "0",
       .help = "layer for rank-3 input (rank-4 input fills every layer)"},
      {.name = "dtype",
       .value_name = "f32|f16|bf16",
       .default_value = "f32",
       .help = "wire dtype"},
      {.name = "chunk-tokens",
       .value_name = "N",
       .default_value = "0",
       .help = "tokens per streamed message (0 = about 2 MiB each)"},
  });
}

int RunAppend(const ParsedArgs& args) {
  absl::StatusOr<int64_t> layer = args.GetInt("layer");
  if (!layer.ok()) return UsageError(layer.status().message());
  absl::StatusOr<int64_t> chunk = args.GetInt("chunk-tokens");
  if (!chunk.ok()) return UsageError(chunk.status().message());
  if (*chunk < 0) return UsageError("--chunk-tokens: must be >= 0");
  absl::StatusOr<v1::DType> dtype = ParseDType(args.Get("dtype"));
  if (!dtype.ok()) return UsageError(dtype.status().message());

  absl::StatusOr<NpyArray> keys = ReadNpy(args.Get("keys"));
  if (!keys.ok()) return Failure(keys.status());
  absl::StatusOr<NpyArray> values = ReadNpy(args.Get("values"));
  if (!values.ok()) return Failure(values.status());
  const size_t rank = keys->shape.size();
  if (rank != 3 && rank != 4) {
    return UsageError(absl::StrCat(
        "--keys: expected [kv_heads, T, d] or [layers, kv_heads, T, d], got ",
        ShapeString(keys->shape)));
  }
  if (rank == 4 && args.Has("layer")) {
    return UsageError(
        "--layer: rank-4 input [layers, kv_heads, T, d] fills every layer; "
        "drop --layer or pass one layer's [kv_heads, T, d]");
  }
  if (values->shape.size() != rank) {
    return UsageError(absl::StrCat("--values: rank ", values->shape.size(),
                                   " does not match --keys rank ", rank));
  }
  const int target =
      rank == 4 ? AttentionClient::kAllLayers : static_cast<int>(*layer);
  const int64_t tokens = keys->shape[rank - 2];
  int64_t per_token = 0;  // wire bytes of one token (all heads, layers)
  if (tokens > 0) {
    per_token = static_cast<int64_t>(keys->data.size() + values->data.size()) /
                tokens * DTypeSize(*dtype);
  }
  AppendOptions options;
  options.dtype = *dtype;
  options.chunk_tokens =
      *chunk > 0 ? *chunk
                 : std::max<int64_t>(
                       1, kAutoChunkBytes / std::max<int64_t>(1, per_token));
  const bool show_progress = per_token * tokens > kProgressBytes;
  if (show_progress) {
    options.progress = [](int64_t sent, int64_t total) {
      std::cerr << absl::StrFormat("\rappend: %d/%d tokens (%.0f%%)", sent,
                                   total, 100.0 * sent / total)
                << std::flush;
    };
  }
  auto client = MakeClient(args);
  if (client == nullptr) return kExitUsage;
  absl::StatusOr<v1::AppendResponse> response = client->AppendTokens(
      args.Get("session"), target, Ref(*keys), Ref(*values), options);
  if (show_progress) std::cerr << "\n";
  if (!response.ok()) return Failure(response.status());
  std::cout << "appended " << tokens << " tokens to "
            << (rank == 4 ? std::string("every layer")
                          : absl::StrCat("layer ", target))
            << "; tokens per layer: "
            << absl::StrJoin(response->tokens_per_layer(), " ")
            << "; state bytes: " << response->state_bytes() << "\n";
  return kExitOk;
}

std::vector<OptionSpec> AttendFlags() {
  return WithCommon({
      {.name = "session",
       .value_name = "ID",
       .help = "session id",
       .required = true},
      {.name = "layer", .value_name = "L", .help = "layer", .required = true},
      {.name = "queries",
       .value_name = "FILE",
       .help = ".npy queries [q_heads, M, d] or [q_heads, d]",
       .required = true},
      {.name = "keys",
       .value_name = "FILE",
       .help = ".npy keys of this step's tokens (appended first)"},
      {.name = "values",
       .value_name = "FILE",
       .help = ".npy values of this step's tokens"},
      {.name = "out",
       .value_name = "FILE",
       .help = "write the output [q_heads, M, dv] as .npy"},
      {.name = "dtype",
       .value_name = "f32|f16|bf16",
       .default_value = "f32",
       .help = "wire dtype"},
  });
}

int RunAttend(const ParsedArgs& args) {
  absl::StatusOr<int64_t> layer = args.GetInt("layer");
  if (!layer.ok()) return UsageError(layer.status().message());
  absl::StatusOr<v1::DType> dtype = ParseDType(args.Get("dtype"));
  if (!dtype.ok()) return UsageError(dtype.status().message());
  if (args.Has("keys") != args.Has("values")) {
    return UsageError("--keys and --values go together");
  }
  absl::StatusOr<NpyArray> queries = ReadNpy(args.Get("queries"));
  if (!queries.ok()) return Failure(queries.status());
  NpyArray keys, values;
  if (args.Has("keys")) {
    absl::StatusOr<NpyArray> k = ReadNpy(args.Get("keys"));
    if (!k.ok()) return Failure(k.status());
    absl::StatusOr<NpyArray> v = ReadNpy(args.Get("values"));
    if (!v.ok()) return Failure(v.status());
    keys = *std::move(k);
    values = *std::move(v);
  }
  auto client = MakeClient(args);
  if (client == nullptr) return kExitUsage;
  absl::StatusOr<AttendResult> result =
      client->Attend(args.Get("session"), static_cast<int>(*layer), Ref(keys),
                     Ref(values), Ref(*queries), *dtype);
  if (!result.ok()) return Failure(result.status());

  const DecodedTensor& out = result->output;
  double total = 0, max_abs = 0;
  for (float x : out.data) {
    total += static_cast<double>(x) * x;
    max_abs = std::max(max_abs, std::abs(static_cast<double>(x)));
  }
  std::cout << "output " << ShapeString(out.shape) << ", layer tokens "
            << result->num_tokens << "\n"
            << absl::StrFormat("norm %.6g, max |x| %.6g\n", std::sqrt(total),
                               max_abs);
  if (!out.shape.empty() && out.shape[0] > 0) {
    const int64_t heads = out.shape[0];
    const int64_t per_head = static_cast<int64_t>(out.data.size()) / heads;
    std::vector<std::string> norms;
    for (int64_t h = 0; h < heads; ++h) {
      double s = 0;
      for (int64_t i = 0; i < per_head; ++i) {
        const double x = out.data[h * per_head + i];
        s += x * x;
      }
      norms.push_back(absl::StrFormat("%.4g", std::sqrt(s)));
    }
    std::cout << "per-head norms: " << absl::StrJoin(norms, " ") << "\n";
  }
  if (args.Has("out")) {
    if (absl::Status s = WriteNpy(args.Get("out"), out.shape, out.data);
        !s.ok()) {
      return Failure(s);
    }
    std::cout << "wrote " << args.Get("out") << "\n";
  }
  return kExitOk;
}

}  // namespace kvsketch::client::cli
