// File: core/sketch/feature_maps.h
//
// Feature maps for the `sketch` approximator's summary (papers/A_B.md §A.7.1):
// maps φ with φ(q)·φ(k) ≈ exp(scale · q·k), so that a sum over keys
// Σ_j φ(k_j) v_jᵀ answers every later query in O(t·dv).
//
//   PositiveRandomFeatures (FAVOR+, §A.7.1 (ii)): unbiased, t features,
//     orthogonal blocks of Gaussian directions drawn from our own seeded
//     generator, so every process on every machine draws the same features.
//   TaylorFeatures (§A.2, the paper's U₁U₂ᵀ): the exact degree-g expansion,
//     φ(q)·φ(k) = Σ_{r≤g} (scale·q·k)^r / r!, with t = C(d+g, g) features.
//     Only for tiny d (t is capped at kMaxTaylorFeatures).
//
// Features are returned in log form, φ_r(x) = sign_r · exp(logabs_r), so the
// summary can keep a per-feature log-scale shift and never overflow (random
// features are exponentials of w·x, which overflow float for |x| ~ 10).
//
// Thread safety: immutable after construction; Compute is const and may run
// concurrently.
#ifndef KVSKETCH_CORE_SKETCH_FEATURE_MAPS_H_
#define KVSKETCH_CORE_SKETCH_FEATURE_MAPS_H_

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/status/statusor.h"

namespace kvsketch {

// N(0, 1) doubles by Box–Muller over the raw 64-bit words of std::mt19937_64,
// whose output sequence the C++ standard fixes. std::normal_distribution is
// implementation-defined (ANCHORS §3.12), so we never use it for anything
// that must be reproducible.
class ReproducibleNormal {
 public:
  explicit ReproducibleNormal(uint64_t seed) : engine_(seed) {}
  double Next();

 private:
  // Uniform in (0, 1]: 53 random bits, never 0 (log(0) is -inf).
  double NextUniform();

  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0;
};

class FeatureMap {
 public:
  virtual ~FeatureMap() = default;

  int num_features() const { return num_features_; }
  int input_dim() const { return input_dim_; }
  // True when every feature is positive (sign is always +1).
  virtual bool all_positive() const = 0;

  // Features of x (input_dim floats): logabs[r] = log|φ_r(x)| (-inf for a
  // zero feature) and sign[r] in {-1, 0, +1}. The same map serves queries and
  // keys. Cost: O(t·d) for random features, O(t) for Taylor features.
  virtual void Compute(const float* x, double* logabs, int8_t* sign) const = 0;

  // Heap bytes of the map's parameters (counted in MemoryBytes()).
  virtual int64_t MemoryBytes() const = 0;

 protected:
  FeatureMap(int num_features, int input_dim)
      : num_features_(num_features), input_dim_(input_dim) {}

 private:
  int num_features_;
  int input_dim_;
};

// φ_r(x) = exp(w_r·x̃ − ‖x̃‖²/2) / √t with x̃ = √scale · x, so that
// E[φ(q)·φ(k)] = exp(scale · q·k). The w_r come in blocks of d mutually
// orthogonal directions (Gram–Schmidt of a Gaussian block, in double), each
// rescaled to the norm of an independent Gaussian d-vector, so each w_r is
// still marginally N(0, I) but the estimate has lower variance.
// Construction cost O(t·d²); memory t·d floats.
class PositiveRandomFeatures : public FeatureMap {
 public:
  PositiveRandomFeatures(int num_features, int input_dim, double scale,
                         uint64_t seed);

  bool all_positive() const override { return true; }
  void Compute(const float* x, double* logabs, int8_t* sign) const override;
  int64_t MemoryBytes() const override;

  // Row r of W (input_dim floats), exposed for tests of the draw.
  const float* direction(int r) const {
    return w_.data() + static_cast<size_t>(r) * input_dim();
  }

 private:
  double sqrt_scale_;
  double log_norm_;       // −½ ln t
  std::vector<float> w_;  // t × d, row-major
};

// All monomials x̃^α with |α| ≤ g, weighted 1/√(α!), so that
// φ(q)·φ(k) = Σ_{|α|≤g} q̃^α k̃^α / α! = Σ_{r≤g} (q̃·k̃)^r / r! (multinomial
// theorem), x̃ = √scale · x.
class TaylorFeatures : public FeatureMap {
 public:
  static constexpr int64_t kMaxTaylorFeatures = 1 << 16;

  // InvalidArgument if C(d+g, g) > kMaxTaylorFeatures.
  static absl::StatusOr<std::unique_ptr<TaylorFeatures>> Create(int input_dim,
                                                                int degree,
                                                                double scale);

  // C(d+g, g), or -1 when it exceeds `cap`.
  static int64_t CountFeatures(int input_dim, int degree, int64_t cap);

  bool all_positive() const override { return false; }
  void Compute(const float* x, double* logabs, int8_t* sign) const override;
  int64_t MemoryBytes() const override;

 private:
  TaylorFeatures(int num_features, int input_dim, double scale);

  double sqrt_scale_;
  // Monomial m = monomial parent_[m] times x̃[var_[m]]; monomial 0 is 1.
  // value_m = raw_m · coef_[m] with coef = 1/√(α!).
  std::vector<int32_t> parent_;
  std::vector<int32_t> var_;
  std::vector<double> coef_;
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_SKETCH_FEATURE_MAPS_H_
