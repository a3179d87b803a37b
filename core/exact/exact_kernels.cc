// File: core/exact/exact_kernels.cc
//
// AVX2/FMA/F16C kernels when the build targets them (x86-64-v3, the image
// baseline), a portable scalar path otherwise. f16/bf16 are widened to float
// in registers as they are loaded (no scratch copy), so a half-precision
// cache moves half the bytes of an f32 one.
#include "core/exact/exact_kernels.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/util/half.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define KVSKETCH_EXACT_AVX2 1
#else
#define KVSKETCH_EXACT_AVX2 0
#endif

namespace kvsketch {
namespace {

// Below this exp(x) is under the smallest normal float; the kernel returns 0.
constexpr float kExpMinArg = -87.33f;

struct F32Elem {
  using T = float;
  static float ToFloat(float x) { return x; }
#if KVSKETCH_EXACT_AVX2
  static __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
#endif
};

struct F16Elem {
  using T = uint16_t;
  static float ToFloat(uint16_t h) { return HalfToFloat(h); }
#if KVSKETCH_EXACT_AVX2
  static __m256 Load8(const uint16_t* p) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
#endif
};

struct Bf16Elem {
  using T = uint16_t;
  static float ToFloat(uint16_t b) { return Bf16ToFloat(b); }
#if KVSKETCH_EXACT_AVX2
  static __m256 Load8(const uint16_t* p) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
  }
#endif
};

#if KVSKETCH_EXACT_AVX2
inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x) for x <= 0: x = n·ln2 + r with |r| <= ln2/2, exp(r) by its Taylor
// polynomial to degree 7 (truncation < 5e-9 relative), times 2^n built in
// the exponent field. ln2 is split hi+lo so n·ln2_hi is exact.
inline __m256 Exp8(__m256 x) {
  const __m256 underflow =
      _mm256_cmp_ps(x, _mm256_set1_ps(kExpMinArg), _CMP_LT_OQ);
  x = _mm256_max_ps(x, _mm256_set1_ps(kExpMinArg));
  const __m256 n =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440054690583e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(underflow, result);
}
#endif

// dots[r] = q_r · k for MQ query rows of width d.
template <class E, int MQ>
inline void DotRows(const float* q, int d, const typename E::T* k,
                    float* dots) {
  int i = 0;
#if KVSKETCH_EXACT_AVX2
  // Independent FMA chains hide the 4-cycle FMA latency when MQ is small.
  constexpr int kChains = MQ >= 4 ? 1 : 4 / MQ;
  __m256 acc[MQ][kChains];
  for (int r = 0; r < MQ; ++r) {
    for (int c = 0; c < kChains; ++c) acc[r][c] = _mm256_setzero_ps();
  }
  for (; i + 8 * kChains <= d; i += 8 * kChains) {
    for (int c = 0; c < kChains; ++c) {
      const __m256 kv = E::Load8(k + i + 8 * c);
      for (int r = 0; r < MQ; ++r) {
        acc[r][c] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * d + i + 8 * c), kv,
                                    acc[r][c]);
      }
    }
  }
  for (; i + 8 <= d; i += 8) {
    const __m256 kv = E::Load8(k + i);
    for (int r = 0; r < MQ; ++r) {
      acc[r][0] =
          _mm256_fmadd_ps(_mm256_loadu_ps(q + r * d + i), kv, acc[r][0]);
    }
  }
  for (int r = 0; r < MQ; ++r) {
    for (int c = 1; c < kChains; ++c)
      acc[r][0] = _mm256_add_ps(acc[r][0], acc[r][c]);
    dots[r] = HorizontalSum(acc[r][0]);
  }
#else
  for (int r = 0; r < MQ; ++r) dots[r] = 0;
#endif
  for (; i < d; ++i) {
    const float kf = E::ToFloat(k[i]);
    for (int r = 0; r < MQ; ++r) dots[r] += q[r * d + i] * kf;
  }
}

#if KVSKETCH_EXACT_AVX2
// Sums of each of 8 vectors, as one vector (lane i = sum of a[i]).
inline __m256 Reduce8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]);
  const __m256 t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]);
  const __m256 t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1);  // [a0..a3 low | a0..a3 high]
  const __m256 u1 = _mm256_hadd_ps(t2, t3);  // [a4..a7 low | a4..a7 high]
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                       _mm256_permute2f128_ps(u0, u1, 0x31));
}

// p[r][j0 + u] = scale · q_r · k_{j0+u} for KU consecutive keys at once:
// MQ·KU independent FMA chains, and one shuffle tree per KU dot products
// instead of one horizontal sum each. REQUIRES: d % 8 == 0.
template <class E, int MQ, int KU>
inline void DotKeys(const float* q, int d, const typename E::T* k, float scale,
                    float (*p)[kKeyBlock], int j0) {
  __m256 acc[MQ][KU];
  for (int r = 0; r < MQ; ++r) {
    for (int u = 0; u < KU; ++u) acc[r][u] = _mm256_setzero_ps();
  }
  for (int i = 0; i < d; i += 8) {
    __m256 kv[KU];
    for (int u = 0; u < KU; ++u) {
      kv[u] = E::Load8(k + static_cast<int64_t>(u) * d + i);
    }
    for (int r = 0; r < MQ; ++r) {
      const __m256 qv = _mm256_loadu_ps(q + r * d + i);
      for (int u = 0; u < KU; ++u)
        acc[r][u] = _mm256_fmadd_ps(qv, kv[u], acc[r][u]);
    }
  }
  // One shuffle tree reduces all MQ·KU (<= 8) dot products at once.
  static_assert(MQ * KU <= 8);
  __m256 flat[8];
  for (int r = 0; r < MQ; ++r) {
    for (int u = 0; u < KU; ++u) flat[r * KU + u] = acc[r][u];
  }
  for (int i = MQ * KU; i < 8; ++i) flat[i] = _mm256_setzero_ps();
  const __m256 sums = _mm256_mul_ps(Reduce8(flat), _mm256_set1_ps(scale));
  if constexpr (MQ == 1 && KU == 8) {
    _mm256_storeu_ps(&p[0][j0], sums);
  } else {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, sums);
    for (int r = 0; r < MQ; ++r) {
      for (int u = 0; u < KU; ++u) p[r][j0 + u] = lanes[r * KU + u];
    }
  }
}
#endif

#if KVSKETCH_EXACT_AVX2
// Half-precision sub-blocks (2 × 16 KB) fit in L1 next to the ones in use,
// and prefetching them cut f16 query time by ~30% at n >= 256K (DRAM
// resident). For f32 (2 × 32 KB) prefetching into L1 evicts the block being
// read and into L2 measured no gain at 256K-1M and a loss at 64K, so f32
// relies on the hardware prefetcher alone.
template <class E>
inline constexpr bool kSoftwarePrefetch = sizeof(typename E::T) == 2;

#endif
// ...but only when the scan is too large to stay in the last-level cache.
// A scan that the LLC holds is served faster by the hardware prefetcher
// alone: on a Xeon with a 260 MiB L3, software prefetches cost up to ~15%
// for a 32 MiB f16 cache (64K tokens at d = dv = 128; 1.44-1.72 ms without
// vs 1.70-1.75 ms with) yet save 30% at 256K and 25% at 1M tokens
// (bench_exact_query, 3 runs each). The threshold is a quarter of the LLC
// this process runs on (the cache is shared with other heads, sessions and
// tenants), read once from the OS; 8 MiB when it does not say.
int64_t SoftwarePrefetchMinBytes() {
  static const int64_t bytes = [] {
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0) llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return llc > 0 ? static_cast<int64_t>(llc) / 4 : int64_t{8} << 20;
  }();
  return bytes;
}

// p[r][j] = scale · q_r · k_j for the nb keys of a block.
//
// prefetch_k / prefetch_v (may be null) are the next sub-block's keys and
// values, prefetch_bytes_k/_v their sizes: their cache lines are requested a
// slice per key group, spread over this block's work, because at long n the
// hardware prefetcher alone does not keep up with the alternating K and V
// streams (and a burst of prefetches would stall the demand loads).
template <class E, int MQ>
inline void BlockScores(const float* q, int d, const typename E::T* kb, int nb,
                        float scale, float (*p)[kKeyBlock],
                        const char* prefetch_k, int64_t prefetch_bytes_k,
                        const char* prefetch_v, int64_t prefetch_bytes_v) {
  int j = 0;
#if KVSKETCH_EXACT_AVX2
  if (d % 8 == 0) {
    // 8 accumulators (MQ·KU), the most that leave registers for the loads.
    constexpr int KU = MQ == 1 ? 8 : MQ == 2 ? 4 : 2;
    // Bytes of the next block to request per key group, whole lines.
    const int64_t groups = std::max(1, nb / KU);
    const int64_t step_k = ((prefetch_bytes_k / groups) + 127) & ~int64_t{63};
    const int64_t step_v = ((prefetch_bytes_v / groups) + 127) & ~int64_t{63};
    int64_t pk = 0, pv = 0;
    for (; j + KU <= nb; j += KU) {
      if constexpr (kSoftwarePrefetch<E>) {
        for (const int64_t end = std::min(pk + step_k, prefetch_bytes_k);
             pk < end; pk += 64) {
          _mm_prefetch(prefetch_k + pk, _MM_HINT_T0);
        }
        for (const int64_t end = std::min(pv + step_v, prefetch_bytes_v);
             pv < end; pv += 64) {
          _mm_prefetch(prefetch_v + pv, _MM_HINT_T0);
        }
      }
      DotKeys<E, MQ, KU>(q, d, kb + static_cast<int64_t>(j) * d, scale, p, j);
    }
  }
#else
  (void)prefetch_k;
  (void)prefetch_bytes_k;
  (void)prefetch_v;
  (void)prefetch_bytes_v;
#endif
  float dots[MQ];
  for (; j < nb; ++j) {
    DotRows<E, MQ>(q, d, kb + static_cast<int64_t>(j) * d, dots);
    for (int r = 0; r < MQ; ++r) p[r][j] = dots[r] * scale;
  }
}

// bacc[r][c] = sum_j p[r][j] · v[j][c] over nb values of width dv.
template <class E, int MQ>
inline void WeightedValues(const float (*p)[kKeyBlock], int nb,
                           const typename E::T* v, int dv, float* bacc) {
  int c = 0;
#if KVSKETCH_EXACT_AVX2
  // 6-8 independent accumulators: enough FMA chains to cover latency.
  constexpr int kVecs = MQ == 1 ? 8 : MQ == 2 ? 4 : 2;
  for (; c + 8 * kVecs <= dv; c += 8 * kVecs) {
    __m256 acc[MQ][kVecs];
    for (int r = 0; r < MQ; ++r) {
      for (int u = 0; u < kVecs; ++u) acc[r][u] = _mm256_setzero_ps();
    }
    for (int j = 0; j < nb; ++j) {
      const typename E::T* row = v + static_cast<int64_t>(j) * dv + c;
      __m256 vv[kVecs];
      for (int u = 0; u < kVecs; ++u) vv[u] = E::Load8(row + 8 * u);
      for (int r = 0; r < MQ; ++r) {
        const __m256 pr = _mm256_set1_ps(p[r][j]);
        for (int u = 0; u < kVecs; ++u) {
          acc[r][u] = _mm256_fmadd_ps(pr, vv[u], acc[r][u]);
        }
      }
    }
    for (int r = 0; r < MQ; ++r) {
      for (int u = 0; u < kVecs; ++u) {
        _mm256_storeu_ps(bacc + r * dv + c + 8 * u, acc[r][u]);
      }
    }
  }
  for (; c + 8 <= dv; c += 8) {
    __m256 acc[MQ];
    for (int r = 0; r < MQ; ++r) acc[r] = _mm256_setzero_ps();
    for (int j = 0; j < nb; ++j) {
      const __m256 vv = E::Load8(v + static_cast<int64_t>(j) * dv + c);
      for (int r = 0; r < MQ; ++r) {
        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(p[r][j]), vv, acc[r]);
      }
    }
    for (int r = 0; r < MQ; ++r) _mm256_storeu_ps(bacc + r * dv + c, acc[r]);
  }
#endif
  if (c < dv) {
    for (int r = 0; r < MQ; ++r) {
      std::fill(bacc + r * dv + c, bacc + r * dv + dv, 0.0f);
    }
    for (int j = 0; j < nb; ++j) {
      const typename E::T* row = v + static_cast<int64_t>(j) * dv;
      for (int cc = c; cc < dv; ++cc) {
        const float vf = E::ToFloat(row[cc]);
        for (int r = 0; r < MQ; ++r) bacc[r * dv + cc] += p[r][j] * vf;
      }
    }
  }
}

// Attention of MQ query rows (q, MQ×d) over every block; writes MQ×dv rows.
template <class E, int MQ>
void TileAttention(const float* q, int d, int dv, float scale,
                   absl::Span<const KvBlock> blocks, const int64_t* limits,
                   float* out) {
  // Row r sees tokens [0, limit[r]); the tile scans up to the largest.
  int64_t limit[MQ];
  int64_t scan_end = 0;
  for (int r = 0; r < MQ; ++r) {
    limit[r] =
        limits != nullptr ? limits[r] : std::numeric_limits<int64_t>::max();
    scan_end = std::max(scan_end, limit[r]);
  }
  using T = typename E::T;
  double run_max[MQ];
  double run_sum[MQ];
  for (int r = 0; r < MQ; ++r) {
    run_max[r] = -std::numeric_limits<double>::infinity();
    run_sum[r] = 0;
  }
  // Tokens the tile scans, to decide on software prefetching.
  int64_t scan_rows = 0;
  for (const KvBlock& block : blocks) scan_rows += block.rows;
  scan_rows = std::min(scan_rows, scan_end);
  // Tiles of several rows do more arithmetic per byte and keep prefetching
  // (m = 4 at 64K: f16 ~8% slower without it).
  const bool prefetch =
      MQ > 1 || scan_rows * (d + dv) * static_cast<int64_t>(sizeof(T)) >
                    SoftwarePrefetchMinBytes();
  std::vector<double> acc(static_cast<size_t>(MQ) * dv, 0.0);
  std::vector<float> bacc(static_cast<size_t>(MQ) * dv);
  alignas(32) float p[MQ][kKeyBlock];
  int64_t base = 0;  // global index of the block's first token
  for (const KvBlock& block : blocks) {
    if (base >= scan_end) break;
    const T* keys = static_cast<const T*>(block.keys);
    const T* values = static_cast<const T*>(block.values);
    for (int64_t start = 0; start < block.rows && base + start < scan_end;
         start += kKeyBlock) {
      // Keys past the tile's largest limit are not read at all.
      const int nb = static_cast<int>(std::min<int64_t>(
          {kKeyBlock, block.rows - start, scan_end - (base + start)}));
      const T* kb = keys + start * d;
      const T* vb = values + start * dv;
      const int64_t next = start + kKeyBlock;
      const int64_t next_rows =
          prefetch ? std::max<int64_t>(
                         0, std::min<int64_t>(kKeyBlock, block.rows - next))
                   : 0;
      // Pointers into the next sub-block only when it exists.
      const char* next_k = next_rows > 0
                               ? reinterpret_cast<const char*>(keys + next * d)
                               : nullptr;
      const char* next_v =
          next_rows > 0 ? reinterpret_cast<const char*>(values + next * dv)
                        : nullptr;
      BlockScores<E, MQ>(q, d, kb, nb, scale, p, next_k,
                         next_rows * d * static_cast<int64_t>(sizeof(T)),
                         next_v,
                         next_rows * dv * static_cast<int64_t>(sizeof(T)));
      float block_max[MQ];
      float block_sum[MQ];
      for (int r = 0; r < MQ; ++r) {
        // Causal masking (Prefill): keys at or past the row's limit get -inf
        // scores, so exp gives them weight 0.
        const int64_t visible = limit[r] - (base + start);
        if (visible <= 0) {
          // Nothing visible to this row here: weight 0 (and no -inf - -inf).
          std::fill(p[r], p[r] + nb, 0.0f);
          block_max[r] = -std::numeric_limits<float>::infinity();
          block_sum[r] = 0;
          continue;
        }
        for (int64_t j = visible; j < nb; ++j) {
          p[r][j] = -std::numeric_limits<float>::infinity();
        }
        float mx = p[r][0];
        for (int j = 1; j < nb; ++j) mx = std::max(mx, p[r][j]);
        for (int j = 0; j < nb; ++j) p[r][j] -= mx;
        ExpNonPositive(p[r], p[r], nb);
        float s = 0;
        for (int j = 0; j < nb; ++j) s += p[r][j];
        block_max[r] = mx;
        block_sum[r] = s;
      }
      WeightedValues<E, MQ>(p, nb, vb, dv, bacc.data());
      for (int r = 0; r < MQ; ++r) {
        const double new_max = std::max(run_max[r], double{block_max[r]});
        const double old_w = std::exp(run_max[r] - new_max);  // 0 at start
        const double blk_w = std::exp(double{block_max[r]} - new_max);
        run_sum[r] = run_sum[r] * old_w + block_sum[r] * blk_w;
        double* a = acc.data() + static_cast<size_t>(r) * dv;
        const float* b = bacc.data() + static_cast<size_t>(r) * dv;
        if (old_w == 1.0) {
          for (int c = 0; c < dv; ++c) a[c] += blk_w * b[c];
        } else {
          for (int c = 0; c < dv; ++c) a[c] = a[c] * old_w + blk_w * b[c];
        }
        run_max[r] = new_max;
      }
    }
    base += block.rows;
  }
  for (int r = 0; r < MQ; ++r) {
    const double inv = 1.0 / run_sum[r];
    const double* a = acc.data() + static_cast<size_t>(r) * dv;
    for (int c = 0; c < dv; ++c)
      out[r * dv + c] = static_cast<float>(a[c] * inv);
  }
}

template <class E>
void AttentionRows(const float* q, int64_t m, int d, int dv, float scale,
                   absl::Span<const KvBlock> blocks, const int64_t* limits,
                   float* out) {
  int64_t r = 0;
  auto lim = [limits](int64_t row) {
    return limits != nullptr ? limits + row : nullptr;
  };
  for (; r + 4 <= m; r += 4) {
    TileAttention<E, 4>(q + r * d, d, dv, scale, blocks, lim(r), out + r * dv);
  }
  switch (m - r) {
    case 3:
      TileAttention<E, 3>(q + r * d, d, dv, scale, blocks, lim(r),
                          out + r * dv);
      break;
    case 2:
      TileAttention<E, 2>(q + r * d, d, dv, scale, blocks, lim(r),
                          out + r * dv);
      break;
    case 1:
      TileAttention<E, 1>(q + r * d, d, dv, scale, blocks, lim(r),
                          out + r * dv);
      break;
    default:
      break;
  }
}

}  // namespace

void ExpNonPositive(const float* x, float* out, int64_t n) {
  int64_t i = 0;
#if KVSKETCH_EXACT_AVX2
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, Exp8(_mm256_loadu_ps(x + i)));
  }
  if (i < n) {
    alignas(32) float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::copy(x + i, x + n, tmp);
    _mm256_store_ps(tmp, Exp8(_mm256_load_ps(tmp)));
    std::copy(tmp, tmp + (n - i), out + i);
    i = n;
  }
#endif
  for (; i < n; ++i) out[i] = x[i] < kExpMinArg ? 0.0f : std::exp(x[i]);
}

void ExactAttention(StoreType store, const float* q, int64_t m, int d, int dv,
                    float scale, absl::Span<const KvBlock> blocks, float* out) {
  ExactCausalAttention(store, q, m, d, dv, scale, blocks, nullptr, out);
}

void ExactCausalAttention(StoreType store, const float* q, int64_t m, int d,
                          int dv, float scale, absl::Span<const KvBlock> blocks,
                          const int64_t* limits, float* out) {
  switch (store) {
    case StoreType::kF32:
      AttentionRows<F32Elem>(q, m, d, dv, scale, blocks, limits, out);
      return;
    case StoreType::kF16:
      AttentionRows<F16Elem>(q, m, d, dv, scale, blocks, limits, out);
      return;
    case StoreType::kBf16:
      AttentionRows<Bf16Elem>(q, m, d, dv, scale, blocks, limits, out);
      return;
  }
}

}  // namespace kvsketch
