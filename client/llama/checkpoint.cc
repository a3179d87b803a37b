#include "client/llama/checkpoint.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kvsketch::llama {
namespace {

// llama2.c's export.py writes uint32 0x616b3432 ("ak42") first in its
// versioned formats; read as the legacy header it is a huge dim.
constexpr int32_t kVersionedMagic = 0x616b3432;

// Upper bounds keep every size product far from int64 overflow and within
// what a kvsketch session accepts (core/session_state.h: layers and heads in
// [1, 1024], head_dim in [1, 65536]). Llama 2 70B is dim 8192, hidden 28672,
// vocab 32000; Llama 3 vocab 128256.
constexpr int kMaxDim = 1 << 16;
constexpr int kMaxHidden = 1 << 20;
constexpr int kMaxLayers = 1024;
constexpr int kMaxHeads = 1024;
constexpr int kMaxVocab = 1 << 24;
constexpr int kMaxSeqLen = 1 << 24;

absl::Status CheckRange(const char* field, int64_t value, int64_t max_value) {
  if (value < 1 || value > max_value) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint header: ", field, " is ", value,
                     ", expected a value in [1, ", max_value, "]"));
  }
  return absl::OkStatus();
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// Reads `count` floats into `out`, checking each is finite. `offset` is the
// byte offset of the first one (for the error message).
absl::Status ReadFloats(std::FILE* file, const std::string& path,
                        const char* tensor, int64_t count, int64_t offset,
                        std::vector<float>* out) {
  out->resize(static_cast<size_t>(count));
  const size_t got = std::fread(out->data(), sizeof(float), out->size(), file);
  if (got != out->size()) {
    return absl::DataLossError(
        absl::StrCat(path, ": read of ", tensor, " failed at byte ",
                     offset + static_cast<int64_t>(got) * 4, ": ",
                     std::ferror(file) ? std::strerror(errno) : "end of file"));
  }
  for (size_t i = 0; i < out->size(); ++i) {
    if (!std::isfinite((*out)[i])) {
      return absl::DataLossError(absl::StrCat(
          path, ": ", tensor, "[", i, "] (byte ",
          offset + static_cast<int64_t>(i) * 4, ") is not finite"));
    }
  }
  return absl::OkStatus();
}

// The weight tensors stored before the RoPE tables, in file order.
struct TensorInfo {
  const char* name;
  int64_t count;
  std::vector<float> LlamaCheckpoint::*member;
};

std::vector<TensorInfo> TensorsBeforeRope(const LlamaConfig& c) {
  const int64_t dim = c.dim, hidden = c.hidden_dim, layers = c.n_layers;
  const int64_t kv_dim = c.kv_dim(), vocab = c.vocab_size;
  using C = LlamaCheckpoint;
  return {
      {"token_embedding", vocab * dim, &C::token_embedding},
      {"rms_att", layers * dim, &C::rms_att},
      {"wq", layers * dim * dim, &C::wq},
      {"wk", layers * kv_dim * dim, &C::wk},
      {"wv", layers * kv_dim * dim, &C::wv},
      {"wo", layers * dim * dim, &C::wo},
      {"rms_ffn", layers * dim, &C::rms_ffn},
      {"w1", layers * hidden * dim, &C::w1},
      {"w2", layers * dim * hidden, &C::w2},
      {"w3", layers * hidden * dim, &C::w3},
      {"rms_final", dim, &C::rms_final},
  };
}

}  // namespace

absl::StatusOr<LlamaConfig> ConfigFromHeader(absl::Span<const int32_t> header) {
  if (header.size() != 7) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint header: expected 7 int32 fields, got ", header.size()));
  }
  if (header[0] == kVersionedMagic) {
    return absl::InvalidArgumentError(
        "checkpoint header: starts with llama2.c's 'ak42' magic (a versioned "
        "export); only the legacy run.c format (export version 0) is read");
  }
  LlamaConfig c;
  c.dim = header[0];
  c.hidden_dim = header[1];
  c.n_layers = header[2];
  c.n_heads = header[3];
  c.n_kv_heads = header[4];
  c.shared_classifier = header[5] > 0;
  // vocab_size is INT32_MIN-safe: widen before negating.
  const int64_t vocab = header[5] < 0 ? -int64_t{header[5]} : header[5];
  c.seq_len = header[6];
  KVSKETCH_RETURN_IF_ERROR(CheckRange("dim", c.dim, kMaxDim));
  KVSKETCH_RETURN_IF_ERROR(CheckRange("hidden_dim", c.hidden_dim, kMaxHidden));
  KVSKETCH_RETURN_IF_ERROR(CheckRange("n_layers", c.n_layers, kMaxLayers));
  KVSKETCH_RETURN_IF_ERROR(CheckRange("n_heads", c.n_heads, kMaxHeads));
  KVSKETCH_RETURN_IF_ERROR(CheckRange("n_kv_heads", c.n_kv_heads, kMaxHeads));
  KVSKETCH_RETURN_IF_ERROR(CheckRange("|vocab_size|", vocab, kMaxVocab));
  KVSKETCH_RETURN_IF_ERROR(CheckRange("seq_len", c.seq_len, kMaxSeqLen));
  c.vocab_size = static_cast<int>(vocab);
  if (c.dim % c.n_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint header: dim (", c.dim,
                     ") is not a multiple of n_heads (", c.n_heads, ")"));
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint header: n_heads (", c.n_heads,
                     ") is not a multiple of n_kv_heads (", c.n_kv_heads, ")"));
  }
  if (c.head_dim() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint header: head_dim = dim / n_heads = ", c.head_dim(),
        " is odd; RoPE rotates pairs of dimensions"));
  }
  return c;
}

int64_t CheckpointFileBytes(const LlamaConfig& c) {
  const int64_t dim = c.dim, hidden = c.hidden_dim, layers = c.n_layers;
  const int64_t vocab = c.vocab_size, kv_dim = c.kv_dim();
  int64_t floats = vocab * dim;                 // token_embedding
  floats += layers * dim;                       // rms_att
  floats += layers * dim * dim * 2;             // wq, wo
  floats += layers * kv_dim * dim * 2;          // wk, wv
  floats += layers * dim;                       // rms_ffn
  floats += layers * hidden * dim * 3;          // w1, w2, w3
  floats += dim;                                // rms_final
  floats += int64_t{c.seq_len} * c.head_dim();  // two tables of head_dim/2
  if (!c.shared_classifier) floats += vocab * dim;
  return kCheckpointHeaderBytes + floats * 4;
}

absl::StatusOr<LlamaCheckpoint> LoadCheckpoint(const std::string& path) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open checkpoint: ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(::fileno(file.get()), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  }
  const int64_t size = st.st_size;
  if (size < kCheckpointHeaderBytes) {
    return absl::DataLossError(
        absl::StrCat(path, ": ", size, " bytes, shorter than the ",
                     kCheckpointHeaderBytes, "-byte checkpoint header"));
  }
  int32_t header[7];
  if (std::fread(header, sizeof(int32_t), 7, file.get()) != 7) {
    return absl::DataLossError(absl::StrCat(path, ": cannot read the header"));
  }
  absl::StatusOr<LlamaConfig> config = ConfigFromHeader(header);
  if (!config.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", config.status().message()));
  }
  const LlamaConfig& c = *config;
  const int64_t expected = CheckpointFileBytes(c);
  if (size != expected) {
    std::string hint;
    LlamaConfig other = c;
    other.shared_classifier = !c.shared_classifier;
    if (size == CheckpointFileBytes(other)) {
      hint = absl::StrCat("; that is the size with the classifier ",
                          c.shared_classifier ? "stored separately" : "shared",
                          ": check the sign of vocab_size");
    }
    return absl::DataLossError(absl::StrCat(
        path, ": ", size, " bytes, but the header (dim ", c.dim, ", hidden ",
        c.hidden_dim, ", layers ", c.n_layers, ", heads ", c.n_heads, "/",
        c.n_kv_heads, ", vocab ", c.vocab_size, ", seq_len ", c.seq_len, ", ",
        c.shared_classifier ? "shared" : "separate", " classifier) implies ",
        expected, size < expected ? " (truncated)" : " (trailing bytes)",
        hint));
  }
  LlamaCheckpoint ck;
  ck.config = c;
  int64_t offset = kCheckpointHeaderBytes;
  for (const TensorInfo& t : TensorsBeforeRope(c)) {
    KVSKETCH_RETURN_IF_ERROR(
        ReadFloats(file.get(), path, t.name, t.count, offset, &(ck.*t.member)));
    offset += t.count * 4;
  }
  // The legacy RoPE tables: run.c recomputes RoPE, and so do we.
  const int64_t rope_bytes = int64_t{c.seq_len} * c.head_dim() * 4;
  if (std::fseek(file.get(), static_cast<long>(rope_bytes), SEEK_CUR) != 0) {
    return absl::DataLossError(
        absl::StrCat(path, ": cannot skip the RoPE tables at byte ", offset));
  }
  offset += rope_bytes;
  if (!c.shared_classifier) {
    KVSKETCH_RETURN_IF_ERROR(ReadFloats(file.get(), path, "classifier",
                                        int64_t{c.vocab_size} * c.dim, offset,
                                        &ck.classifier));
  }
  return ck;
}

absl::Status WriteCheckpoint(const std::string& path,
                             const LlamaCheckpoint& ck) {
  const LlamaConfig& c = ck.config;
  std::vector<TensorInfo> tensors = TensorsBeforeRope(c);
  const int64_t rope_floats = int64_t{c.seq_len} * c.head_dim();
  if (!c.shared_classifier) {
    tensors.push_back({"classifier", int64_t{c.vocab_size} * c.dim,
                       &LlamaCheckpoint::classifier});
  }
  for (const TensorInfo& t : tensors) {
    if (static_cast<int64_t>((ck.*t.member).size()) != t.count) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint: ", t.name, " has ", (ck.*t.member).size(),
                       " floats, the config implies ", t.count));
    }
  }
  const int32_t header[7] = {
      c.dim,        c.hidden_dim,
      c.n_layers,   c.n_heads,
      c.n_kv_heads, c.shared_classifier ? c.vocab_size : -c.vocab_size,
      c.seq_len};
  std::string bytes(reinterpret_cast<const char*>(header), sizeof(header));
  bytes.reserve(static_cast<size_t>(CheckpointFileBytes(c)));
  auto append = [&bytes](const std::vector<float>& v) {
    bytes.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  };
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].member == &LlamaCheckpoint::classifier) {
      bytes.append(static_cast<size_t>(rope_floats) * 4, '\0');
    }
    append(ck.*tensors[i].member);
  }
  if (c.shared_classifier) {
    bytes.append(static_cast<size_t>(rope_floats) * 4, '\0');
  }
  const std::string tmp = path + ".tmp";
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(tmp.c_str(), "wb"));
  if (file == nullptr) {
    return absl::UnavailableError(
        absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  }
  const bool wrote =
      std::fwrite(bytes.data(), 1, bytes.size(), file.get()) == bytes.size();
  const bool closed = std::fclose(file.release()) == 0;
  if (!wrote || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return absl::UnavailableError(
        absl::StrCat(path, ": write failed: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace kvsketch::llama
