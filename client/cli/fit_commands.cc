// `kvsketch fit` (issue #5): attention regression from .npy files
// (core/regression, papers/C_D_E §D), in-process. Two modes:
//
//   --a1 --a2 --a3 --b --out DIR   fit X, Y of ‖softmax(A1 X A2ᵀ) A3 Y − B‖²;
//                                  write X.npy, Y.npy, history.csv
//   --trace DIR --correct SPEC     per-head storage correction of a lossy
//                                  approximator (§D.7 item 1), fitted on the
//                                  first tokens, scored on the rest; with
//                                  --out, saved for `kvsketch eval
//                                  --correction` (core/regression/
//                                  correction_file.h)
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/command.h"
#include "core/eval/trace.h"
#include "core/io/npy.h"
#include "core/regression/correction_file.h"
#include "core/regression/regression.h"
#include "core/regression/storage_correction.h"

namespace kvsketch::client::cli {
namespace {

using regression::Matrix;

absl::StatusOr<Matrix> ReadMatrix(const std::string& path, const char* name) {
  absl::StatusOr<NpyArray> a = ReadNpy(path);
  if (!a.ok()) {
    return absl::Status(a.status().code(),
                        absl::StrCat(name, ": ", a.status().message()));
  }
  if (a->shape.size() != 2) {
    std::string shape;
    for (int64_t s : a->shape)
      absl::StrAppend(&shape, shape.empty() ? "" : ",", s);
    return absl::InvalidArgumentError(absl::StrCat(
        name, " (", path, "): expected a 2-D array, got shape [", shape, "]"));
  }
  Matrix m(a->shape[0], a->shape[1]);
  for (int64_t i = 0; i < m.rows(); ++i) {
    for (int64_t j = 0; j < m.cols(); ++j) {
      m(i, j) = a->data[i * m.cols() + j];
    }
  }
  return m;
}

absl::Status WriteMatrix(const std::string& path, const Matrix& m) {
  std::vector<float> data(m.size());
  for (int64_t i = 0; i < m.rows(); ++i) {
    for (int64_t j = 0; j < m.cols(); ++j) {
      data[i * m.cols() + j] = static_cast<float>(m(i, j));
    }
  }
  return WriteNpy(path, {m.rows(), m.cols()}, data);
}

int RunCorrection(const ParsedArgs& args, double lambda, int64_t max_iters,
                  double tol) {
  auto train = args.GetDouble("train");
  auto layer = args.GetInt("layer");
  if (!train.ok()) return UsageError(train.status().message());
  if (!layer.ok()) return UsageError(layer.status().message());
  if (!(*train > 0 && *train < 1))
    return UsageError("--train must be in (0, 1)");
  absl::StatusOr<eval::Trace> trace = eval::LoadTraceDir(args.Get("trace"));
  if (!trace.ok()) return Failure(trace.status());
  regression::CorrectionOptions opt;
  opt.base_spec = args.Get("correct");
  opt.train_fraction = *train;
  opt.lambda = args.Has("lambda") ? lambda : 1e-3;
  opt.max_iterations = static_cast<int>(max_iters);
  opt.rel_tol = tol;
  opt.layer = static_cast<int>(*layer);
  std::printf(
      "storage correction of '%s' on %s: %lld tokens, train on the first "
      "%.0f%%, lambda %g x |B_train|^2\n",
      opt.base_spec.c_str(), trace->name.c_str(),
      static_cast<long long>(trace->n), 100 * opt.train_fraction, opt.lambda);
  std::printf("%5s %4s %9s %9s %9s %9s %6s %9s\n", "layer", "head", "train_raw",
              "train_fit", "held_raw", "held_fit", "iters", "model_chk");
  std::fflush(stdout);
  auto res = regression::FitStorageCorrection(
      *trace, opt, [](const regression::HeadCorrection& h) {
        std::printf("%5d %4d %9.3e %9.3e %9.3e %9.3e %6d %9.1e\n", h.layer,
                    h.q_head, h.train_untrained, h.train_fitted,
                    h.held_untrained, h.held_fitted, h.iterations,
                    h.model_check);
        std::fflush(stdout);
      });
  if (!res.ok()) return Failure(res.status());
  double raw = 0, fit = 0;
  int improved = 0;
  std::string csv =
      "layer,q_head,train_rows,held_rows,train_untrained,train_fitted,"
      "held_untrained,held_fitted,iterations,model_check\n";
  for (const regression::HeadCorrection& h : *res) {
    raw += h.held_untrained;
    fit += h.held_fitted;
    improved += h.held_fitted < h.held_untrained;
    absl::StrAppendFormat(&csv, "%d,%d,%d,%d,%.9g,%.9g,%.9g,%.9g,%d,%.3g\n",
                          h.layer, h.q_head, h.train_rows, h.held_rows,
                          h.train_untrained, h.train_fitted, h.held_untrained,
                          h.held_fitted, h.iterations, h.model_check);
  }
  const double heads = static_cast<double>(res->size());
  std::printf(
      "held-out relative error, mean over %zu heads: untrained %.4e, fitted "
      "%.4e (%d of %zu heads improved)\n",
      res->size(), raw / heads, fit / heads, improved, res->size());
  if (args.Has("out")) {
    const std::string dir = args.Get("out");
    absl::StatusOr<regression::StorageCorrectionFile> file =
        regression::MakeStorageCorrectionFile(*trace, args.Get("trace"), opt,
                                              *res);
    if (!file.ok()) return Failure(file.status());
    if (absl::Status st = regression::SaveStorageCorrection(*file, dir);
        !st.ok()) {
      return Failure(st);
    }
    if (absl::Status st = WriteFileAtomically(dir + "/correction.csv", csv);
        !st.ok()) {
      return Failure(st);
    }
    std::printf(
        "wrote %s/correction_x.npy, correction_y.npy, correction.txt "
        "(base %s, trained on positions 0..%lld) and correction.csv\n",
        dir.c_str(), file->base_spec.c_str(),
        static_cast<long long>(file->train_tokens - 1));
  }
  return kExitOk;
}

}  // namespace

std::vector<OptionSpec> FitFlags() {
  return {
      {.name = "a1", .value_name = "FILE", .help = "A1 [n, d1] .npy (queries)"},
      {.name = "a2", .value_name = "FILE", .help = "A2 [m, d2] .npy (keys)"},
      {.name = "a3", .value_name = "FILE", .help = "A3 [m, p] .npy (values)"},
      {.name = "b", .value_name = "FILE", .help = "B [n, q] .npy (targets)"},
      {.name = "out",
       .value_name = "DIR",
       .help = "write X.npy [d1, d2], Y.npy [p, q], history.csv here "
               "(--correct: correction_x.npy [L,Hq,d,d], correction_y.npy "
               "[L,Hq,dv,dv], correction.txt for kvsketch eval "
               "--correction, and correction.csv)"},
      {.name = "causal",
       .help = "causal mask: row i sees key rows j <= i + m - n"},
      {.name = "lambda",
       .value_name = "L",
       .default_value = "0",
       .help = "ridge lambda*(|X|^2 + |Y|^2); --correct: relative to "
               "|B_train|^2, toward identity (default there 1e-3)"},
      {.name = "max-iters",
       .value_name = "N",
       .default_value = "100",
       .help = "iteration cap"},
      {.name = "tol",
       .value_name = "T",
       .default_value = "1e-12",
       .help = "stop when the relative loss change is <= T"},
      {.name = "holdout",
       .value_name = "FRACTION",
       .help = "hold out this fraction of the rows of A1/B (the last ones) "
               "and report the loss on them"},
      {.name = "split",
       .value_name = "ROWS",
       .help = "train on the first ROWS rows of A1/B, hold out the rest"},
      {.name = "trace",
       .value_name = "DIR",
       .help = "storage-correction mode: trace directory (q/k/v.npy, e.g. "
               "from kvsketch llama --dump-trace)"},
      {.name = "correct",
       .value_name = "SPEC",
       .default_value = "evict",
       .help = "with --trace: the lossy approximator to correct (evict:... "
               "or exact:store=f16|bf16)"},
      {.name = "train",
       .value_name = "FRACTION",
       .default_value = "0.5",
       .help = "with --trace: fit on this leading fraction of the tokens"},
      {.name = "layer",
       .value_name = "L",
       .default_value = "-1",
       .help = "with --trace: only this layer (-1 = all)"},
      {.name = "quiet", .help = "no per-iteration progress lines"},
  };
}

int RunFit(const ParsedArgs& args) {
  auto lambda = args.GetDouble("lambda");
  auto max_iters = args.GetInt("max-iters");
  auto tol = args.GetDouble("tol");
  for (const absl::Status& s :
       {lambda.status(), max_iters.status(), tol.status()}) {
    if (!s.ok()) return UsageError(s.message());
  }
  if (!(*lambda >= 0) || !std::isfinite(*lambda)) {
    return UsageError("--lambda must be a finite number >= 0");
  }
  if (*max_iters < 0 || *max_iters > 100000) {
    return UsageError("--max-iters must be in [0, 100000]");
  }
  if (!(*tol >= 0)) return UsageError("--tol must be >= 0");
  const bool trace_mode = args.Has("trace");
  const bool file_mode =
      args.Has("a1") || args.Has("a2") || args.Has("a3") || args.Has("b");
  if (trace_mode && file_mode) {
    return UsageError("give either --trace or --a1/--a2/--a3/--b, not both");
  }
  if (trace_mode) return RunCorrection(args, *lambda, *max_iters, *tol);
  for (const char* f : {"a1", "a2", "a3", "b", "out"}) {
    if (!args.Has(f)) {
      return UsageError(absl::StrCat(
          "--", f, " is required (or --trace DIR for storage correction)"));
    }
  }
  if (args.Has("holdout") && args.Has("split")) {
    return UsageError("give either --holdout or --split, not both");
  }
  regression::RegressionData data;
  const char* names[] = {"a1", "a2", "a3", "b"};
  Matrix* dst[] = {&data.a1, &data.a2, &data.a3, &data.b};
  for (int i = 0; i < 4; ++i) {
    std::string label = absl::StrCat("--", names[i]);
    absl::StatusOr<Matrix> m = ReadMatrix(args.Get(names[i]), label.c_str());
    if (!m.ok()) return Failure(m.status());
    *dst[i] = std::move(*m);
  }
  const int64_t n = data.a1.rows(), m = data.a2.rows();
  if (data.b.rows() != n) {
    return Failure(absl::InvalidArgumentError(
        absl::StrCat("--b has ", data.b.rows(), " rows but --a1 has ", n)));
  }
  data.causal = args.Flag("causal");
  if (data.causal && m < n) {
    return Failure(absl::InvalidArgumentError(
        absl::StrCat("--causal needs at least as many key rows (A2: ", m,
                     ") as query rows (A1: ", n, ")")));
  }
  data.row_offset = data.causal ? m - n : 0;
  int64_t n_train = n;
  if (args.Has("holdout")) {
    auto f = args.GetDouble("holdout");
    if (!f.ok()) return UsageError(f.status().message());
    if (!(*f > 0 && *f < 1)) return UsageError("--holdout must be in (0, 1)");
    n_train = n - static_cast<int64_t>(std::llround(*f * n));
  } else if (args.Has("split")) {
    auto s = args.GetInt("split");
    if (!s.ok()) return UsageError(s.status().message());
    n_train = *s;
  }
  const bool split = args.Has("holdout") || args.Has("split");
  if (split && (n_train < 1 || n_train >= n)) {
    return UsageError(absl::StrCat("the split leaves ", n_train, " of ", n,
                                   " rows for training and ", n - n_train,
                                   " held out; both must be >= 1"));
  }
  regression::RegressionData held;
  if (n_train < n) {
    held = data;
    held.a1 = data.a1.bottomRows(n - n_train);
    held.b = data.b.bottomRows(n - n_train);
    held.row_offset = data.row_offset + n_train;
    data.a1.conservativeResize(n_train, Eigen::NoChange);
    data.b.conservativeResize(n_train, Eigen::NoChange);
  }
  const regression::RegressionPenalty pen{.lambda_x = *lambda,
                                          .lambda_y = *lambda};
  const double bb = data.b.squaredNorm();
  auto prob = regression::AttentionRegression::Create(std::move(data), pen);
  if (!prob.ok()) return Failure(prob.status());
  regression::RegressionOptions opt;
  opt.max_iterations = static_cast<int>(*max_iters);
  opt.rel_tol = *tol;
  const bool quiet = args.Flag("quiet");
  std::string csv = "iteration,loss,rel_change,grad_norm,step,damping\n";
  opt.progress = [&](const regression::IterationRecord& r) {
    absl::StrAppendFormat(&csv, "%d,%.17g,%.6g,%.6g,%.6g,%.6g\n", r.iteration,
                          r.loss, r.rel_change, r.grad_norm, r.step, r.damping);
    if (quiet) return;
    std::printf(
        "iter %3d  loss %.6e  rel_change %9.3e  grad_norm %9.3e  step %-6.3g "
        "damping %.1e\n",
        r.iteration, r.loss, r.rel_change, r.grad_norm, r.step, r.damping);
    std::fflush(stdout);
  };
  std::printf(
      "fit: n %lld (train %lld), m %lld, X %lldx%lld, Y %lldx%lld%s\n",
      static_cast<long long>(n), static_cast<long long>(n_train),
      static_cast<long long>(m), static_cast<long long>(prob->d1()),
      static_cast<long long>(prob->d2()), static_cast<long long>(prob->p()),
      static_cast<long long>(prob->q()), prob->data().causal ? ", causal" : "");
  auto res = regression::Solve(*prob, opt);
  if (!res.ok()) return Failure(res.status());
  std::printf(
      "final loss %.6e (residual %.6e, relative %.3e), %zu iterations, %s\n",
      res->loss, res->residual_loss, res->residual_loss / std::max(1e-300, bb),
      res->history.size() - 1, res->stop_reason.c_str());
  if (n_train < n) {
    const double hb = held.b.squaredNorm();
    auto hp = regression::AttentionRegression::Create(std::move(held), pen);
    if (!hp.ok()) return Failure(hp.status());
    const double hl = hp->ResidualLoss(res->x, res->y);
    std::printf("held-out loss %.6e over %lld rows (relative %.3e)\n", hl,
                static_cast<long long>(n - n_train), hl / std::max(1e-300, hb));
  }
  const std::string dir = args.Get("out");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  for (auto [file, mat] :
       {std::pair{"X.npy", &res->x}, std::pair{"Y.npy", &res->y}}) {
    if (absl::Status st = WriteMatrix(absl::StrCat(dir, "/", file), *mat);
        !st.ok()) {
      return Failure(st);
    }
  }
  if (absl::Status st = WriteFileAtomically(dir + "/history.csv", csv);
      !st.ok()) {
    return Failure(st);
  }
  std::printf("wrote %s/X.npy, %s/Y.npy, %s/history.csv\n", dir.c_str(),
              dir.c_str(), dir.c_str());
  return kExitOk;
}

}  // namespace kvsketch::client::cli
