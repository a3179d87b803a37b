// Storage correction directory (see header).
#include "core/regression/correction_file.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/io/npy.h"
#include "core/registry.h"
#include "core/regression/corrected_approximator.h"
#include "core/status_macros.h"

namespace kvsketch::regression {
namespace {

constexpr char kFormat[] = "kvsketch-storage-correction/1";
constexpr char kMeta[] = "correction.txt";
constexpr char kXFile[] = "correction_x.npy";
constexpr char kYFile[] = "correction_y.npy";

absl::Status WriteTextAtomically(const std::string& path,
                                 const std::string& text) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::UnavailableError(absl::StrCat(path, ": cannot write"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::UnavailableError(absl::StrCat(path, ": cannot rename"));
  }
  return absl::OkStatus();
}

// Flattens per-head square matrices into [layers, q_heads, s, s] floats.
std::vector<float> Flatten(const std::vector<Matrix>& ms, int64_t s) {
  std::vector<float> out;
  out.reserve(ms.size() * s * s);
  for (const Matrix& m : ms) {
    for (int64_t i = 0; i < s; ++i) {
      for (int64_t j = 0; j < s; ++j)
        out.push_back(static_cast<float>(m(i, j)));
    }
  }
  return out;
}

absl::StatusOr<std::vector<Matrix>> ReadHeads(const std::string& dir,
                                              const char* name,
                                              const StorageCorrectionFile& f,
                                              int64_t s) {
  const std::string path = absl::StrCat(dir, "/", name);
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat(path, ": missing"));
  }
  KVSKETCH_ASSIGN_OR_RETURN(NpyArray a, ReadNpy(path));
  const std::vector<int64_t> want = {f.layers, f.q_heads, s, s};
  if (a.shape != want) {
    std::string got;
    for (int64_t x : a.shape) absl::StrAppend(&got, got.empty() ? "" : ",", x);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": shape [", got, "], expected [", f.layers, ",", f.q_heads, ",",
        s, ",", s, "] (layers, q_heads from ", kMeta, ")"));
  }
  std::vector<Matrix> out;
  for (int l = 0; l < f.layers; ++l) {
    for (int h = 0; h < f.q_heads; ++h) {
      const float* p =
          a.data.data() + (static_cast<int64_t>(l) * f.q_heads + h) * s * s;
      Matrix m(s, s);
      for (int64_t i = 0; i < s; ++i) {
        for (int64_t j = 0; j < s; ++j) {
          if (!std::isfinite(p[i * s + j])) {
            return absl::InvalidArgumentError(
                absl::StrCat(path, ": non-finite entry at layer ", l,
                             ", query head ", h, " (", i, ",", j, ")"));
          }
          m(i, j) = p[i * s + j];
        }
      }
      out.push_back(std::move(m));
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<StorageCorrectionFile> MakeStorageCorrectionFile(
    const eval::Trace& trace, const std::string& trace_dir,
    const CorrectionOptions& options, absl::Span<const HeadCorrection> heads) {
  StorageCorrectionFile f;
  KVSKETCH_ASSIGN_OR_RETURN(f.base_spec, CanonicalizeSpec(options.base_spec));
  f.trace_name = trace.name;
  std::error_code ec;
  const std::filesystem::path abs =
      std::filesystem::weakly_canonical(trace_dir, ec);
  f.trace_dir = ec ? trace_dir : abs.string();
  f.layers = trace.layers;
  f.q_heads = trace.q_heads;
  f.kv_heads = trace.kv_heads;
  f.d = trace.d;
  f.dv = trace.dv;
  f.n = trace.n;
  f.train_tokens = static_cast<int64_t>(options.train_fraction * trace.n);
  f.lambda = options.lambda;
  f.layer = options.layer;
  const size_t count = static_cast<size_t>(f.layers) * f.q_heads;
  f.x.assign(count, Matrix::Identity(f.d, f.d));
  f.y.assign(count, Matrix::Identity(f.dv, f.dv));
  for (const HeadCorrection& h : heads) {
    if (h.layer < 0 || h.layer >= f.layers || h.q_head < 0 ||
        h.q_head >= f.q_heads) {
      return absl::InvalidArgumentError(
          absl::StrCat("correction head (layer ", h.layer, ", query head ",
                       h.q_head, ") outside the trace"));
    }
    if (h.x.rows() != f.d || h.x.cols() != f.d || h.y.rows() != f.dv ||
        h.y.cols() != f.dv) {
      return absl::InvalidArgumentError(absl::StrCat(
          "correction head (layer ", h.layer, ", query head ", h.q_head,
          ") has X ", h.x.rows(), "x", h.x.cols(), ", Y ", h.y.rows(), "x",
          h.y.cols(), "; expected ", f.d, "x", f.d, ", ", f.dv, "x", f.dv));
    }
    f.x[h.layer * f.q_heads + h.q_head] = h.x;
    f.y[h.layer * f.q_heads + h.q_head] = h.y;
  }
  return f;
}

absl::Status SaveStorageCorrection(const StorageCorrectionFile& f,
                                   const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat(dir, ": cannot create: ", ec.message()));
  }
  const size_t count = static_cast<size_t>(f.layers) * f.q_heads;
  if (f.x.size() != count || f.y.size() != count) {
    return absl::InvalidArgumentError(
        absl::StrCat("correction has ", f.x.size(), " X and ", f.y.size(),
                     " Y matrices for ", count, " query heads"));
  }
  KVSKETCH_RETURN_IF_ERROR(WriteNpy(absl::StrCat(dir, "/", kXFile),
                                    {f.layers, f.q_heads, f.d, f.d},
                                    Flatten(f.x, f.d)));
  KVSKETCH_RETURN_IF_ERROR(WriteNpy(absl::StrCat(dir, "/", kYFile),
                                    {f.layers, f.q_heads, f.dv, f.dv},
                                    Flatten(f.y, f.dv)));
  std::string meta = absl::StrCat(
      "# kvsketch storage correction: X, Y per query head in ", kXFile, " [",
      "layers, q_heads, d, d] and ", kYFile, " [layers, q_heads, dv, dv]\n");
  absl::StrAppend(&meta, "format=", kFormat, "\n");
  absl::StrAppend(&meta, "base_spec=", f.base_spec, "\n");
  absl::StrAppend(&meta, "trace=", f.trace_name, "\n");
  absl::StrAppend(&meta, "trace_dir=", f.trace_dir, "\n");
  absl::StrAppend(&meta, "layers=", f.layers, "\n", "q_heads=", f.q_heads, "\n",
                  "kv_heads=", f.kv_heads, "\n", "n=", f.n, "\n", "d=", f.d,
                  "\n", "dv=", f.dv, "\n");
  absl::StrAppend(&meta, "train_tokens=", f.train_tokens, "\n",
                  "lambda=", absl::StrFormat("%.17g", f.lambda), "\n",
                  "layer=", f.layer, "\n");
  return WriteTextAtomically(absl::StrCat(dir, "/", kMeta), meta);
}

absl::StatusOr<StorageCorrectionFile> LoadStorageCorrection(
    const std::string& dir) {
  const std::string meta_path = absl::StrCat(dir, "/", kMeta);
  std::ifstream in(meta_path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(meta_path,
                     ": missing (not a directory written by kvsketch fit "
                     "--correct ... --out)"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::map<std::string, std::string> kv;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(ss.str(), '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          meta_path, ":", line_no, ": expected key=value, got '", line, "'"));
    }
    kv[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
  }
  auto get = [&](const char* key) -> absl::StatusOr<std::string> {
    auto it = kv.find(key);
    if (it == kv.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(meta_path, ": missing key '", key, "'"));
    }
    return it->second;
  };
  auto get_int = [&](const char* key, int64_t lo,
                     int64_t hi) -> absl::StatusOr<int64_t> {
    KVSKETCH_ASSIGN_OR_RETURN(std::string s, get(key));
    int64_t v = 0;
    if (!absl::SimpleAtoi(s, &v) || v < lo || v > hi) {
      return absl::InvalidArgumentError(
          absl::StrCat(meta_path, ": ", key, "='", s,
                       "' is not an integer in [", lo, ", ", hi, "]"));
    }
    return v;
  };
  KVSKETCH_ASSIGN_OR_RETURN(std::string format, get("format"));
  if (format != kFormat) {
    return absl::InvalidArgumentError(absl::StrCat(
        meta_path, ": format '", format, "', expected '", kFormat, "'"));
  }
  StorageCorrectionFile f;
  KVSKETCH_ASSIGN_OR_RETURN(std::string spec, get("base_spec"));
  absl::StatusOr<std::string> canonical = CanonicalizeSpec(spec);
  if (!canonical.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(meta_path, ": base_spec: ", canonical.status().message()));
  }
  f.base_spec = *canonical;
  KVSKETCH_ASSIGN_OR_RETURN(f.trace_name, get("trace"));
  KVSKETCH_ASSIGN_OR_RETURN(f.trace_dir, get("trace_dir"));
  constexpr int64_t kMaxDim = 65536;
  KVSKETCH_ASSIGN_OR_RETURN(int64_t layers, get_int("layers", 1, 4096));
  KVSKETCH_ASSIGN_OR_RETURN(int64_t q_heads, get_int("q_heads", 1, 4096));
  KVSKETCH_ASSIGN_OR_RETURN(int64_t kv_heads, get_int("kv_heads", 1, q_heads));
  KVSKETCH_ASSIGN_OR_RETURN(int64_t d, get_int("d", 1, kMaxDim));
  KVSKETCH_ASSIGN_OR_RETURN(int64_t dv, get_int("dv", 1, kMaxDim));
  KVSKETCH_ASSIGN_OR_RETURN(f.n, get_int("n", 2, int64_t{1} << 40));
  KVSKETCH_ASSIGN_OR_RETURN(f.train_tokens,
                            get_int("train_tokens", 1, f.n - 1));
  KVSKETCH_ASSIGN_OR_RETURN(int64_t layer, get_int("layer", -1, layers - 1));
  if (q_heads % kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(meta_path, ": q_heads (", q_heads,
                     ") is not a multiple of kv_heads (", kv_heads, ")"));
  }
  KVSKETCH_ASSIGN_OR_RETURN(std::string lambda, get("lambda"));
  if (!absl::SimpleAtod(lambda, &f.lambda) || !(f.lambda >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        meta_path, ": lambda='", lambda, "' is not a number >= 0"));
  }
  f.layers = static_cast<int>(layers);
  f.q_heads = static_cast<int>(q_heads);
  f.kv_heads = static_cast<int>(kv_heads);
  f.d = static_cast<int>(d);
  f.dv = static_cast<int>(dv);
  f.layer = static_cast<int>(layer);
  KVSKETCH_ASSIGN_OR_RETURN(f.x, ReadHeads(dir, kXFile, f, f.d));
  KVSKETCH_ASSIGN_OR_RETURN(f.y, ReadHeads(dir, kYFile, f, f.dv));
  return f;
}

absl::Status CheckCorrectionMatchesTrace(const StorageCorrectionFile& f,
                                         const eval::Trace& t) {
  const std::pair<const char*, std::pair<int64_t, int64_t>> dims[] = {
      {"layers", {f.layers, t.layers}},
      {"query heads", {f.q_heads, t.q_heads}},
      {"KV heads", {f.kv_heads, t.kv_heads}},
      {"d", {f.d, t.d}},
      {"dv", {f.dv, t.dv}}};
  for (const auto& [name, v] : dims) {
    if (v.first != v.second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the correction (fitted on ", f.trace_name, ") has ", name, " = ",
          v.first, " but the trace ", t.name, " has ", v.second));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Approximator>> WrapWithCorrection(
    const StorageCorrectionFile& f, int layer, int kv_head,
    std::unique_ptr<Approximator> base) {
  if (layer < 0 || layer >= f.layers || kv_head < 0 || kv_head >= f.kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "correction: (layer ", layer, ", KV head ", kv_head, ") outside ",
        f.layers, " layers x ", f.kv_heads, " KV heads"));
  }
  const int g = f.group();
  const size_t first = static_cast<size_t>(layer) * f.q_heads + kv_head * g;
  KVSKETCH_ASSIGN_OR_RETURN(
      std::unique_ptr<CorrectedApproximator> c,
      CorrectedApproximator::Create(
          std::move(base), absl::MakeConstSpan(f.x).subspan(first, g),
          absl::MakeConstSpan(f.y).subspan(first, g)));
  return std::unique_ptr<Approximator>(std::move(c));
}

}  // namespace kvsketch::regression
