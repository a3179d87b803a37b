// File: core/conv/fft_conv.cc
#include "core/conv/fft_conv.h"

#include <fftw3.h>

#include <algorithm>
#include <complex>
#include <map>
#include <memory>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "core/status_macros.h"

namespace kvsketch {
namespace {

struct FftwFree {
  void operator()(void* p) const { fftw_free(p); }
};
using RealBuffer = std::unique_ptr<double[], FftwFree>;
using ComplexBuffer = std::unique_ptr<fftw_complex[], FftwFree>;

RealBuffer AllocReal(int64_t count) {
  return RealBuffer(fftw_alloc_real(static_cast<size_t>(count)));
}
ComplexBuffer AllocComplex(int64_t count) {
  return ComplexBuffer(fftw_alloc_complex(static_cast<size_t>(count)));
}

struct Plans {
  fftw_plan forward = nullptr;   // L reals → L/2+1 complex, `batch` channels
  fftw_plan backward = nullptr;  // the inverse (unnormalised, destroys input)
};

// FFTW's planner is not thread-safe: every plan is made under this one lock.
// Plans are never destroyed (a few per distinct length, process lifetime).
absl::Mutex plan_mutex(absl::kConstInit);

Plans GetPlans(int64_t length, int batch) {
  absl::MutexLock lock(&plan_mutex);
  // Guarded by plan_mutex.
  static std::map<std::pair<int64_t, int>, Plans>* const cache =
      new std::map<std::pair<int64_t, int>, Plans>;
  auto it = cache->find({length, batch});
  if (it != cache->end()) return it->second;
  // Planning arrays come from fftw_malloc like every execution buffer, so
  // the alignment the plan assumes holds for the new-array calls.
  const int64_t bins = length / 2 + 1;
  RealBuffer real = AllocReal(length * batch);
  ComplexBuffer spec = AllocComplex(bins * batch);
  int n[1] = {static_cast<int>(length)};
  Plans p;
  // Channel c of transform row t sits at t·batch + c: stride = batch,
  // distance between transforms = 1.
  p.forward =
      fftw_plan_many_dft_r2c(1, n, batch, real.get(), nullptr, batch, 1,
                             spec.get(), nullptr, batch, 1, FFTW_ESTIMATE);
  p.backward =
      fftw_plan_many_dft_c2r(1, n, batch, spec.get(), nullptr, batch, 1,
                             real.get(), nullptr, batch, 1, FFTW_ESTIMATE);
  KVSKETCH_CHECK(p.forward != nullptr && p.backward != nullptr);
  cache->emplace(std::make_pair(length, batch), p);
  return p;
}

void DirectAccumulate(const double* b, int64_t m, const double* x, int channels,
                      double* y) {
  for (int64_t t = 0; t < m; ++t) {
    double* yt = y + t * channels;
    for (int64_t l = 0; l <= t; ++l) {
      const double bl = b[l];
      if (bl == 0) continue;
      const double* xs = x + (t - l) * channels;
      for (int c = 0; c < channels; ++c) yt[c] += bl * xs[c];
    }
  }
}

void FftAccumulate(const double* b, int64_t m, const double* x, int channels,
                   double* y) {
  const int64_t length = FftFriendlyLength(2 * m - 1);
  const int64_t bins = length / 2 + 1;
  const double inv = 1.0 / static_cast<double>(length);

  // Spectrum of the filter, once for all channels.
  ComplexBuffer filter = AllocComplex(bins);
  {
    RealBuffer padded = AllocReal(length);
    std::copy(b, b + m, padded.get());
    std::fill(padded.get() + m, padded.get() + length, 0.0);
    fftw_execute_dft_r2c(GetPlans(length, 1).forward, padded.get(),
                         filter.get());
  }

  const int max_batch = std::min(channels, kFftBatch);
  RealBuffer real = AllocReal(length * max_batch);
  ComplexBuffer spec = AllocComplex(bins * max_batch);
  for (int c0 = 0; c0 < channels; c0 += max_batch) {
    const int batch = std::min(max_batch, channels - c0);
    const Plans plans = GetPlans(length, batch);
    double* r = real.get();
    for (int64_t t = 0; t < m; ++t) {
      const double* src = x + t * channels + c0;
      std::copy(src, src + batch, r + t * batch);
    }
    std::fill(r + m * batch, r + length * batch, 0.0);
    fftw_execute_dft_r2c(plans.forward, r, spec.get());
    auto* s = reinterpret_cast<std::complex<double>*>(spec.get());
    const auto* f = reinterpret_cast<const std::complex<double>*>(filter.get());
    for (int64_t k = 0; k < bins; ++k) {
      const std::complex<double> fk = f[k] * inv;
      for (int c = 0; c < batch; ++c) s[k * batch + c] *= fk;
    }
    fftw_execute_dft_c2r(plans.backward, spec.get(), r);
    for (int64_t t = 0; t < m; ++t) {
      double* dst = y + t * channels + c0;
      const double* src = r + t * batch;
      for (int c = 0; c < batch; ++c) dst[c] += src[c];
    }
  }
}

}  // namespace

int64_t FftFriendlyLength(int64_t n) {
  int64_t best = 1;
  while (best < n) best *= 2;  // a power of two always qualifies
  for (int64_t p7 = 1; p7 < best; p7 *= 7) {
    for (int64_t p5 = p7; p5 < best; p5 *= 5) {
      for (int64_t p3 = p5; p3 < best; p3 *= 3) {
        int64_t v = p3;
        while (v < n) v *= 2;
        best = std::min(best, v);
      }
    }
  }
  return best;
}

void CausalConvAccumulate(const double* b, int64_t m, const double* x,
                          int channels, double* y, ConvMethod method) {
  if (m <= 0) return;
  const bool direct = method == ConvMethod::kDirect ||
                      (method == ConvMethod::kAuto && m <= kDirectMaxLength);
  if (direct) {
    DirectAccumulate(b, m, x, channels, y);
  } else {
    FftAccumulate(b, m, x, channels, y);
  }
}

}  // namespace kvsketch
