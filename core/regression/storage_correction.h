// File: core/regression/storage_correction.h
//
// Per-head storage correction after lossy storage (papers/C_D_E §D.7 item 1):
// a lossy approximator answers query t with softmax(s·q_t K̃_tᵀ) Ṽ_t over the
// keys it still holds (K̃_t: the subset an eviction policy kept, or keys
// rounded to f16/bf16). Fit a bilinear score correction X (d×d, from
// identity) and a value map Y (dv×dv, from identity) so that
//
//   softmax(s·q_t X K̃_tᵀ) Ṽ_t Y  ≈  exact attention output of q_t
//
// on the first tokens of a trace (the attention regression of regression.h
// with A1 = s·Q, A2 = K̃, A3 = Ṽ, B = exact outputs, and the visibility mask
// of what the approximator held at each step), then apply (X, Y) to the
// later, held-out tokens. X = Y = I reproduces the approximator; the report
// checks that (model_check) before trusting any figure.
//
// Supported bases: `evict` (the mask is its StoredPositions() after each
// decode step, replayed Append + Attend per token, the serving path) and
// `exact:store=f16|bf16|f32` (all earlier keys visible, rounded as stored).
// Other kinds are Unimplemented: their state is not a key subset.
//
// Cost per query head: the replay O(n·b·(d + dv)) for evict's budget b, the
// fit O(iterations · (T² d + T d⁴)) for T training tokens (d ≤ 64: dense
// Newton), and O(n² d) for the held-out evaluation.
#ifndef KVSKETCH_CORE_REGRESSION_STORAGE_CORRECTION_H_
#define KVSKETCH_CORE_REGRESSION_STORAGE_CORRECTION_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/eval/trace.h"
#include "core/regression/regression.h"

namespace kvsketch::regression {

struct CorrectionOptions {
  std::string base_spec = "evict";
  // The first ⌊train_fraction·n⌋ positions are fitted, the rest held out.
  double train_fraction = 0.5;
  // Ridge toward identity for X and Y, relative to ‖B_train‖²_F (so the
  // weight does not depend on the trace's scale or length).
  double lambda = 1e-3;
  int max_iterations = 30;
  double rel_tol = 1e-9;
  int layer = -1;  // -1: every layer
};

struct HeadCorrection {
  int layer = 0;
  int q_head = 0;
  int64_t train_rows = 0, held_rows = 0;
  // max |model(X=I, Y=I) − the approximator's own output|, relative to
  // max |output|: ~1e-7 when the model of the stored state is right.
  double model_check = 0;
  // Relative Frobenius errors ‖O − B‖_F / ‖B‖_F against exact attention.
  double train_untrained = 0, train_fitted = 0;
  double held_untrained = 0, held_fitted = 0;
  int iterations = 0;
  Matrix x, y;
};

// InvalidArgument if the trace lacks a query per position, for a bad
// option or a train split leaving either part empty; Unimplemented for an
// unsupported base kind; errors of the registry and the solver otherwise.
// `on_head` (optional) sees each head as soon as it is done.
absl::StatusOr<std::vector<HeadCorrection>> FitStorageCorrection(
    const eval::Trace& trace, const CorrectionOptions& options,
    const std::function<void(const HeadCorrection&)>& on_head = nullptr);

}  // namespace kvsketch::regression

#endif  // KVSKETCH_CORE_REGRESSION_STORAGE_CORRECTION_H_
