// File: core/sketch/sketch.cc
#include "core/sketch/sketch.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kvsketch {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr uint8_t kStateVersion = 1;

absl::StatusOr<std::unique_ptr<Approximator>> CreateSketch(
    const SpecParams& params, const HeadShape& shape,
    std::string canonical_spec) {
  // Everything is allocated up front: refuse sizes that cannot be meant.
  // The summary has t features: `features` for prf, C(d+g, g) for taylor
  // (known only once the map is built, which is cheap: O(t·g) indices).
  const int64_t exact_tokens = params.GetInt("sinks") + params.GetInt("window");
  auto check_bytes = [&](int64_t features) -> absl::Status {
    const int64_t bytes =
        exact_tokens * (shape.head_dim + shape.value_dim) * 4 +
        features * (shape.value_dim + shape.head_dim + 3) * 8;
    if (bytes > (int64_t{1} << 31)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "spec ", canonical_spec, ": sinks + window and ", features,
          " features need ", bytes, " bytes per head at head_dim ",
          shape.head_dim, ", value_dim ", shape.value_dim,
          "; the limit is 2 GiB"));
    }
    return absl::OkStatus();
  };
  const std::string& map_name = params.GetEnum("map");
  if (map_name != "taylor") {
    KVSKETCH_RETURN_IF_ERROR(check_bytes(params.GetInt("features")));
  }
  // The prf map draws a d×d Gaussian block per d features (feature_maps.cc):
  // at least d² normals per head even for one feature, a cost the memory
  // check above does not see (head_dim 60408 with features=1: 3.6·10^9
  // draws per head, minutes for a 62-byte CreateSession; found by
  // tests/fuzz/request_fuzzer.cc). 8192² = 2^26 draws is about a second.
  constexpr int kMaxPrfHeadDim = 8192;
  if (map_name == "prf" && shape.head_dim > kMaxPrfHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec ", canonical_spec, ": map=prf supports head_dim up to ",
        kMaxPrfHeadDim, ", got ", shape.head_dim));
  }
  std::shared_ptr<const FeatureMap> map;
  if (map_name == "taylor") {
    KVSKETCH_ASSIGN_OR_RETURN(
        std::unique_ptr<TaylorFeatures> taylor,
        TaylorFeatures::Create(shape.head_dim,
                               static_cast<int>(params.GetInt("degree")),
                               shape.scale));
    KVSKETCH_RETURN_IF_ERROR(check_bytes(taylor->num_features()));
    map = std::move(taylor);
  } else {
    map = std::make_shared<PositiveRandomFeatures>(
        static_cast<int>(params.GetInt("features")), shape.head_dim,
        shape.scale, static_cast<uint64_t>(params.GetInt("seed")));
  }
  return std::unique_ptr<Approximator>(new SketchApproximator(
      shape, std::move(map), static_cast<int>(params.GetInt("sinks")),
      static_cast<int>(params.GetInt("window")), std::move(canonical_spec)));
}

float Dot(const float* a, const float* b, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

const KindDef& SketchKindDef() {
  static const KindDef* const def = new KindDef{
      "sketch",
      "exact sinks + recent window, feature-map summary S=sum phi(k)v^T of "
      "the rest; memory constant in n (papers/A_B.md A.7)",
      {
          ParamDef{"map",
                   ParamType::kEnum,
                   "prf",
                   {"prf", "taylor"},
                   -1e300,
                   1e300,
                   "feature map: prf = positive orthogonal random features, "
                   "taylor = exact degree-g Taylor features (tiny d only)"},
          ParamDef{"features",
                   ParamType::kInt,
                   "256",
                   {},
                   1,
                   65536,
                   "number of random features t (map=prf)"},
          ParamDef{"degree",
                   ParamType::kInt,
                   "2",
                   {},
                   0,
                   32,
                   "Taylor degree g (map=taylor); t = C(d+g, g) <= 65536"},
          ParamDef{"sinks",
                   ParamType::kInt,
                   "4",
                   {},
                   0,
                   1 << 20,
                   "first tokens kept exactly"},
          ParamDef{"window",
                   ParamType::kInt,
                   "128",
                   {},
                   0,
                   1 << 22,
                   "most recent tokens kept exactly"},
          ParamDef{"seed",
                   ParamType::kInt,
                   "0",
                   {},
                   0,
                   9007199254740992.0,
                   "random-feature seed (same seed, same features on every "
                   "machine)"},
      },
      &CreateSketch};
  return *def;
}

SketchApproximator::SketchApproximator(const HeadShape& shape,
                                       std::shared_ptr<const FeatureMap> map,
                                       int sinks, int window,
                                       std::string canonical_spec)
    : Approximator(shape),
      map_(std::move(map)),
      max_sinks_(sinks),
      max_window_(window),
      spec_(std::move(canonical_spec)) {
  KVSKETCH_CHECK(map_ != nullptr && map_->input_dim() == shape.head_dim);
  KVSKETCH_CHECK(sinks >= 0 && window >= 0);
  const size_t d = shape.head_dim, dv = shape.value_dim;
  const size_t t = map_->num_features();
  sink_k_.resize(sinks * d);
  sink_v_.resize(sinks * dv);
  win_k_.resize(window * d);
  win_v_.resize(window * dv);
  shift_.assign(t, kNegInf);
  z_.assign(t, 0.0);
  s_.assign(t * dv, 0.0);
  feat_log_.resize(t);
  feat_sign_.resize(t);
}

int64_t SketchApproximator::MemoryBytes() const {
  const auto floats = [](const std::vector<float>& v) {
    return static_cast<int64_t>(v.capacity() * sizeof(float));
  };
  const auto doubles = [](const std::vector<double>& v) {
    return static_cast<int64_t>(v.capacity() * sizeof(double));
  };
  return floats(sink_k_) + floats(sink_v_) + floats(win_k_) + floats(win_v_) +
         doubles(shift_) + doubles(z_) + doubles(s_) + doubles(feat_log_) +
         static_cast<int64_t>(feat_sign_.capacity()) + map_->MemoryBytes();
}

const float* SketchApproximator::WindowKey(int i) const {
  const int slot = (win_start_ + i) % max_window_;
  return win_k_.data() + static_cast<size_t>(slot) * shape().head_dim;
}

const float* SketchApproximator::WindowValue(int i) const {
  const int slot = (win_start_ + i) % max_window_;
  return win_v_.data() + static_cast<size_t>(slot) * shape().value_dim;
}

void SketchApproximator::Summarize(const float* key, const float* value) {
  const int t = map_->num_features();
  const int dv = shape().value_dim;
  map_->Compute(key, feat_log_.data(), feat_sign_.data());
  for (int r = 0; r < t; ++r) {
    if (feat_sign_[r] == 0) continue;
    const double l = feat_log_[r];
    double* row = s_.data() + static_cast<size_t>(r) * dv;
    if (l > shift_[r]) {
      // exp(-inf) = 0 on the first token of this feature: the row is 0.
      const double f = std::exp(shift_[r] - l);
      for (int c = 0; c < dv; ++c) row[c] *= f;
      z_[r] *= f;
      shift_[r] = l;
    }
    const double w = feat_sign_[r] * std::exp(l - shift_[r]);
    z_[r] += w;
    for (int c = 0; c < dv; ++c) row[c] += w * value[c];
  }
  ++num_summarized_;
}

void SketchApproximator::AppendOne(const float* key, const float* value) {
  const int d = shape().head_dim, dv = shape().value_dim;
  ++num_tokens_;
  if (num_sinks_ < max_sinks_) {
    std::copy(key, key + d,
              sink_k_.data() + static_cast<size_t>(num_sinks_) * d);
    std::copy(value, value + dv,
              sink_v_.data() + static_cast<size_t>(num_sinks_) * dv);
    ++num_sinks_;
    return;
  }
  if (max_window_ == 0) {
    Summarize(key, value);
    return;
  }
  if (win_count_ == max_window_) {
    Summarize(WindowKey(0), WindowValue(0));
    win_start_ = (win_start_ + 1) % max_window_;
    --win_count_;
  }
  const int slot = (win_start_ + win_count_) % max_window_;
  std::copy(key, key + d, win_k_.data() + static_cast<size_t>(slot) * d);
  std::copy(value, value + dv, win_v_.data() + static_cast<size_t>(slot) * dv);
  ++win_count_;
}

absl::Status SketchApproximator::Append(ConstMatrixView keys,
                                        ConstMatrixView values) {
  KVSKETCH_RETURN_IF_ERROR(CheckAppendArgs(keys, values));
  for (int64_t i = 0; i < keys.rows; ++i) AppendOne(keys.row(i), values.row(i));
  return absl::OkStatus();
}

absl::Status SketchApproximator::Query(ConstMatrixView queries,
                                       MatrixView out) const {
  KVSKETCH_RETURN_IF_ERROR(CheckQueryArgs(queries, out));
  if (num_tokens_ == 0) {
    return absl::FailedPreconditionError(
        "query: no token has been appended to this head yet");
  }
  const int d = shape().head_dim, dv = shape().value_dim;
  const int t = map_->num_features();
  const int n_exact = num_sinks_ + win_count_;
  std::vector<const float*> ek(n_exact), ev(n_exact);
  for (int j = 0; j < num_sinks_; ++j) {
    ek[j] = sink_k_.data() + static_cast<size_t>(j) * d;
    ev[j] = sink_v_.data() + static_cast<size_t>(j) * dv;
  }
  for (int i = 0; i < win_count_; ++i) {
    ek[num_sinks_ + i] = WindowKey(i);
    ev[num_sinks_ + i] = WindowValue(i);
  }
  std::vector<double> scores(n_exact), qlog(t), num(dv), exact_num(dv);
  std::vector<int8_t> qsign(t);
  for (int64_t row = 0; row < queries.rows; ++row) {
    const float* q = queries.row(row);
    double m = kNegInf;
    for (int j = 0; j < n_exact; ++j) {
      scores[j] = static_cast<double>(shape().scale) * Dot(q, ek[j], d);
      m = std::max(m, scores[j]);
    }
    if (num_summarized_ > 0) {
      map_->Compute(q, qlog.data(), qsign.data());
      for (int r = 0; r < t; ++r) {
        if (qsign[r] == 0 || shift_[r] == kNegInf) continue;
        qlog[r] += shift_[r];  // log of the row's true scale
        m = std::max(m, qlog[r]);
      }
    }
    if (!std::isfinite(m)) m = 0;
    std::fill(num.begin(), num.end(), 0.0);
    double den = 0;
    for (int j = 0; j < n_exact; ++j) {
      const double w = std::exp(scores[j] - m);
      den += w;
      for (int c = 0; c < dv; ++c) num[c] += w * ev[j][c];
    }
    const double exact_den = den;
    exact_num = num;
    if (num_summarized_ > 0) {
      for (int r = 0; r < t; ++r) {
        if (qsign[r] == 0 || shift_[r] == kNegInf) continue;
        const double w = qsign[r] * std::exp(qlog[r] - m);
        if (w == 0) continue;
        den += w * z_[r];
        const double* srow = s_.data() + static_cast<size_t>(r) * dv;
        for (int c = 0; c < dv; ++c) num[c] += w * srow[c];
      }
    }
    // A truncated odd-degree Taylor series can make the normaliser <= 0
    // (exp is positive, its approximation need not be): fall back to the
    // exact part, which is then the better estimate.
    if (!(den > 0) && exact_den > 0) {
      den = exact_den;
      num = exact_num;
    }
    float* o = out.row(row);
    const double inv = den > 0 ? 1.0 / den : 0.0;
    for (int c = 0; c < dv; ++c) o[c] = static_cast<float>(num[c] * inv);
  }
  return absl::OkStatus();
}

void SketchApproximator::AddSummary(const std::vector<double>& shift,
                                    const std::vector<double>& z,
                                    const std::vector<double>& s) {
  const int t = map_->num_features();
  const int dv = shape().value_dim;
  for (int r = 0; r < t; ++r) {
    if (shift[r] == kNegInf) continue;
    double* row = s_.data() + static_cast<size_t>(r) * dv;
    const double* other = s.data() + static_cast<size_t>(r) * dv;
    if (shift[r] > shift_[r]) {
      const double f = std::exp(shift_[r] - shift[r]);
      for (int c = 0; c < dv; ++c) row[c] *= f;
      z_[r] *= f;
      shift_[r] = shift[r];
    }
    const double g = std::exp(shift[r] - shift_[r]);
    z_[r] += g * z[r];
    for (int c = 0; c < dv; ++c) row[c] += g * other[c];
  }
}

absl::Status SketchApproximator::MergeFrom(const SketchApproximator& other) {
  if (other.spec_ != spec_ || other.shape().head_dim != shape().head_dim ||
      other.shape().value_dim != shape().value_dim ||
      other.shape().scale != shape().scale) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sketch merge: other has spec '", other.spec_, "' and shape (",
        other.shape().head_dim, ", ", other.shape().value_dim, ", ",
        other.shape().scale, "), expected '", spec_, "' and (",
        shape().head_dim, ", ", shape().value_dim, ", ", shape().scale, ")"));
  }
  if (&other == this) {
    const SketchApproximator copy = *this;
    return MergeFrom(copy);
  }
  const int d = shape().head_dim, dv = shape().value_dim;
  // Replays B's exact tokens around B's summary in stream order: B's sinks,
  // then (if B summarised anything) its middle tokens, which push our whole
  // window into the summary, then B's window. Once B has summarised tokens
  // its sinks and window were full, so after B's sinks ours are full too and
  // B's window lands in an empty window exactly as a sequential append would.
  for (int j = 0; j < other.num_sinks_; ++j) {
    AppendOne(other.sink_k_.data() + static_cast<size_t>(j) * d,
              other.sink_v_.data() + static_cast<size_t>(j) * dv);
  }
  if (other.num_summarized_ > 0) {
    while (win_count_ > 0) {
      Summarize(WindowKey(0), WindowValue(0));
      win_start_ = max_window_ > 0 ? (win_start_ + 1) % max_window_ : 0;
      --win_count_;
    }
    win_start_ = 0;
    AddSummary(other.shift_, other.z_, other.s_);
    num_summarized_ += other.num_summarized_;
    num_tokens_ += other.num_summarized_;
  }
  for (int i = 0; i < other.win_count_; ++i) {
    AppendOne(other.WindowKey(i), other.WindowValue(i));
  }
  return absl::OkStatus();
}

// SaveState payload (version 1):
//   u8 version, i64 num_tokens, i64 num_summarized, u32 num_sinks,
//   u32 window_count, sinks (keys then values, f32), window oldest first
//   (keys then values, f32), shift[t], z[t], S[t×dv] (f64; shift may be -inf).
absl::Status SketchApproximator::SaveState(ByteWriter& writer) const {
  const int d = shape().head_dim, dv = shape().value_dim;
  writer.PutU8(kStateVersion);
  writer.PutI64(num_tokens_);
  writer.PutI64(num_summarized_);
  writer.PutU32(static_cast<uint32_t>(num_sinks_));
  writer.PutU32(static_cast<uint32_t>(win_count_));
  writer.PutFloats({sink_k_.data(), static_cast<size_t>(num_sinks_) * d});
  writer.PutFloats({sink_v_.data(), static_cast<size_t>(num_sinks_) * dv});
  for (int i = 0; i < win_count_; ++i) {
    writer.PutFloats({WindowKey(i), static_cast<size_t>(d)});
  }
  for (int i = 0; i < win_count_; ++i) {
    writer.PutFloats({WindowValue(i), static_cast<size_t>(dv)});
  }
  for (double v : shift_) writer.PutF64(v);
  for (double v : z_) writer.PutF64(v);
  for (double v : s_) writer.PutF64(v);
  return absl::OkStatus();
}

absl::Status SketchApproximator::LoadState(ByteReader& reader) {
  const size_t d = shape().head_dim, dv = shape().value_dim;
  uint8_t version = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetU8(&version, "sketch state version"));
  if (version != kStateVersion) {
    return absl::DataLossError(
        absl::StrCat("sketch state: unknown version ", version));
  }
  int64_t n = 0, summarized = 0;
  uint32_t sinks = 0, wcount = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetI64(&n, "sketch num_tokens"));
  KVSKETCH_RETURN_IF_ERROR(reader.GetI64(&summarized, "sketch num_summarized"));
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&sinks, "sketch num_sinks"));
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&wcount, "sketch window count"));
  const bool full = static_cast<int>(sinks) == max_sinks_ &&
                    static_cast<int>(wcount) == max_window_;
  if (sinks > static_cast<uint32_t>(max_sinks_) ||
      wcount > static_cast<uint32_t>(max_window_) || summarized < 0 ||
      n != static_cast<int64_t>(sinks) + wcount + summarized ||
      (summarized > 0 && !full) ||
      (wcount > 0 && static_cast<int>(sinks) != max_sinks_)) {
    return absl::DataLossError(
        absl::StrCat("sketch state: inconsistent counts (tokens ", n,
                     ", summarized ", summarized, ", sinks ", sinks, "/",
                     max_sinks_, ", window ", wcount, "/", max_window_, ")"));
  }
  const size_t t = map_->num_features();
  std::vector<float> sk(sink_k_.size()), sv(sink_v_.size());
  std::vector<float> wk(win_k_.size()), wv(win_v_.size());
  KVSKETCH_RETURN_IF_ERROR(reader.GetFloats(sk.data(), sinks * d, "sink keys"));
  KVSKETCH_RETURN_IF_ERROR(
      reader.GetFloats(sv.data(), sinks * dv, "sink values"));
  KVSKETCH_RETURN_IF_ERROR(
      reader.GetFloats(wk.data(), wcount * d, "window keys"));
  KVSKETCH_RETURN_IF_ERROR(
      reader.GetFloats(wv.data(), wcount * dv, "window values"));
  // Clients cannot send non-finite keys or values (wire/tensor_codec.h); a
  // NaN window key loaded, reached z when its token left the window, and
  // the state then failed the z check below on re-import
  // (tests/fuzz/snapshot_fuzzer.cc).
  for (const std::vector<float>* v : {&sk, &sv, &wk, &wv}) {
    for (float x : *v) {
      if (!std::isfinite(x)) {
        return absl::DataLossError("sketch state: non-finite key or value");
      }
    }
  }
  std::vector<double> shift(t), z(t), s(t * dv);
  for (double& v : shift) {
    KVSKETCH_RETURN_IF_ERROR(reader.GetF64(&v, "sketch feature shift"));
    if (std::isnan(v) || v == std::numeric_limits<double>::infinity()) {
      return absl::DataLossError("sketch state: bad feature shift");
    }
  }
  for (double& v : z) {
    KVSKETCH_RETURN_IF_ERROR(reader.GetF64(&v, "sketch z"));
    if (!std::isfinite(v)) return absl::DataLossError("sketch state: bad z");
  }
  for (double& v : s) {
    KVSKETCH_RETURN_IF_ERROR(reader.GetF64(&v, "sketch S"));
    if (!std::isfinite(v)) return absl::DataLossError("sketch state: bad S");
  }
  num_tokens_ = n;
  num_summarized_ = summarized;
  num_sinks_ = static_cast<int>(sinks);
  win_start_ = 0;
  win_count_ = static_cast<int>(wcount);
  sink_k_.swap(sk);
  sink_v_.swap(sv);
  win_k_.swap(wk);
  win_v_.swap(wv);
  shift_.swap(shift);
  z_.swap(z);
  s_.swap(s);
  return absl::OkStatus();
}

}  // namespace kvsketch
