#include "client/loadgen/loadgen.h"

#include <algorithm>
#include <deque>
#include <iostream>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "client/attention_client.h"
#include "client/tensor_ref.h"
#include "core/status_macros.h"

namespace kvsketch::client {
namespace {

// Request variants per stream: enough that consecutive steps differ, few
// enough that building them costs nothing next to the run.
constexpr int kVariants = 4;
// How long the receivers get to drain after the senders stop before the
// streams are cancelled.
constexpr absl::Duration kDrainTimeout = absl::Seconds(10);
// Pause before replacing a stream the server ended as busy/unavailable.
constexpr absl::Duration kReopenPause = absl::Milliseconds(10);

// Quotes a string for JSON (specs and addresses are plain ASCII, but a
// quote or backslash must not break the object).
std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", c);
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

absl::Status Validate(const LoadgenOptions& o) {
  auto positive = [](const char* name, int64_t v) -> absl::Status {
    if (v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": must be positive, got ", v));
    }
    return absl::OkStatus();
  };
  KVSKETCH_RETURN_IF_ERROR(positive("sessions", o.sessions));
  KVSKETCH_RETURN_IF_ERROR(
      positive("sessions-per-stream", o.sessions_per_stream));
  KVSKETCH_RETURN_IF_ERROR(positive("layers", o.layers));
  KVSKETCH_RETURN_IF_ERROR(positive("kv-heads", o.kv_heads));
  KVSKETCH_RETURN_IF_ERROR(positive("query-heads", o.query_heads));
  KVSKETCH_RETURN_IF_ERROR(positive("head-dim", o.head_dim));
  KVSKETCH_RETURN_IF_ERROR(positive("max-in-flight", o.max_in_flight));
  if (o.query_heads % o.kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--query-heads: ", o.query_heads,
                     " is not a multiple of --kv-heads ", o.kv_heads));
  }
  if (o.prefill < 0) return absl::InvalidArgumentError("--prefill: negative");
  if (o.rate < 0) return absl::InvalidArgumentError("--rate: negative");
  if (o.duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--duration: must be positive");
  }
  if (o.warmup < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--warmup: negative");
  }
  return absl::OkStatus();
}

std::vector<float> RandomVector(std::mt19937_64& rng, size_t n) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Measurements shared by every stream.
class Stats {
 public:
  explicit Stats(absl::Time measure_start) : measure_start_(measure_start) {}

  void RecordStep(absl::Time intended, absl::Time done,
                  const v1::DecodeResponse& response, int64_t request_bytes,
                  int64_t tokens, int64_t queries) {
    absl::MutexLock l(&mu_);
    for (const v1::DecodeResult& r : response.results()) {
      if (r.code() != 0) {
        ++errors_[absl::StatusCodeToString(
            static_cast<absl::StatusCode>(r.code()))];
      }
    }
    const int64_t ns = absl::ToInt64Nanoseconds(done - intended);
    // The progress line covers warmup too; the report does not.
    interval_.Record(ns);
    ++interval_steps_;
    ++all_steps_;
    if (intended < measure_start_) return;
    total_.Record(ns);
    ++steps_;
    tokens_ += tokens;
    queries_ += queries;
    bytes_sent_ += request_bytes;
    bytes_received_ += static_cast<int64_t>(response.ByteSizeLong());
  }

  void RecordError(const std::string& code) {
    absl::MutexLock l(&mu_);
    ++errors_[code];
  }

  // (steps in interval, interval p99 ns, steps so far including warmup);
  // resets the interval.
  void TakeInterval(int64_t* steps, int64_t* p99, int64_t* total) {
    absl::MutexLock l(&mu_);
    *steps = interval_steps_;
    *p99 = interval_.Percentile(0.99);
    *total = all_steps_;
    interval_steps_ = 0;
    interval_.Reset();
  }

  void Fill(LoadgenReport* report) {
    absl::MutexLock l(&mu_);
    report->steps = steps_;
    report->tokens = tokens_;
    report->queries = queries_;
    report->bytes_sent = bytes_sent_;
    report->bytes_received = bytes_received_;
    report->latency_ns = total_;
    report->errors = errors_;
  }

 private:
  const absl::Time measure_start_;
  absl::Mutex mu_;
  LatencyHistogram total_ ABSL_GUARDED_BY(mu_);
  LatencyHistogram interval_ ABSL_GUARDED_BY(mu_);
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t interval_steps_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t all_steps_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t queries_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t bytes_sent_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t bytes_received_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int64_t> errors_ ABSL_GUARDED_BY(mu_);
};

// One Decode stream: a sender thread paced by the schedule and a receiver
// thread matching responses to send times (steps answer in order).
class StreamWorker {
 public:
  StreamWorker(const LoadgenOptions& options, AttentionClient* client,
               std::vector<std::string> sessions, uint64_t seed, Stats* stats)
      : options_(options),
        client_(client),
        sessions_(std::move(sessions)),
        stats_(stats) {
    std::mt19937_64 rng(seed);
    const int d = options_.head_dim;
    for (int v = 0; v < kVariants; ++v) {
      v1::DecodeRequest request;
      for (const std::string& id : sessions_) {
        for (int layer = 0; layer < options_.layers; ++layer) {
          std::vector<float> k = RandomVector(rng, options_.kv_heads * d);
          std::vector<float> val = RandomVector(rng, options_.kv_heads * d);
          std::vector<float> q = RandomVector(rng, options_.query_heads * d);
          // Rank-2 tensors: one token ([heads, dim]).
          KVSKETCH_CHECK(AddDecodeEntry(id, layer, {{options_.kv_heads, d}, k},
                                        {{options_.kv_heads, d}, val},
                                        {{options_.query_heads, d}, q},
                                        options_.dtype, &request)
                             .ok());
        }
      }
      request_bytes_[v] = static_cast<int64_t>(request.ByteSizeLong());
      templates_.push_back(std::move(request));
    }
  }

  void Start(absl::Time start, absl::Time end, const std::atomic<bool>* stop) {
    stream_ = client_->OpenDecodeStream(sessions_.front());
    sender_ =
        std::thread([this, start, end, stop] { SendLoop(start, end, stop); });
    receiver_ = std::thread([this] { ReceiveLoop(); });
  }

  // Waits for the receiver up to `deadline`, then cancels the stream.
  void Join(absl::Time deadline) {
    sender_.join();
    {
      absl::MutexLock l(&mu_);
      mu_.AwaitWithDeadline(absl::Condition(&receiver_done_), deadline);
      if (!receiver_done_) stream_->Cancel();
    }
    receiver_.join();
  }

 private:
  struct InFlight {
    uint64_t step_id;
    absl::Time intended;
    int64_t bytes;
  };

  void SendLoop(absl::Time start, absl::Time end,
                const std::atomic<bool>* stop) {
    const int window = options_.rate > 0 ? options_.max_in_flight : 1;
    for (uint64_t step = 0;; ++step) {
      absl::Time intended = absl::Now();
      if (options_.rate > 0) {
        intended =
            start + absl::Seconds(static_cast<double>(step) / options_.rate);
        while (absl::Now() < intended && !stop->load()) {
          absl::SleepFor(
              std::min(intended - absl::Now(), absl::Milliseconds(50)));
        }
      }
      bool reopen = false;
      {
        absl::MutexLock l(&mu_);
        auto ready = [&] {
          return static_cast<int>(in_flight_.size()) < window || receiver_done_;
        };
        while (!ready() && !stop->load()) {
          mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(50));
        }
        reopen = receiver_done_ && retryable_end_ && options_.reopen_streams &&
                 !stop->load() && absl::Now() < end && intended < end;
        if (!reopen && (receiver_done_ || stop->load() || absl::Now() >= end ||
                        intended >= end)) {
          break;
        }
        if (!reopen) {
          if (options_.rate == 0) intended = absl::Now();
          const int v = static_cast<int>(step % kVariants);
          in_flight_.push_back({step, intended, request_bytes_[v]});
        }
      }
      if (reopen) {
        // This step is not sent (open loop: it counts as skipped, like a
        // step the window held back past the end).
        Reopen();
        continue;
      }
      v1::DecodeRequest& request = templates_[step % kVariants];
      request.set_step_id(step);
      if (!stream_->Send(request).ok()) {
        // The receiver sees why; with reopen_streams the loop above waits
        // for it and decides whether to open a new stream.
        if (!options_.reopen_streams) break;
      }
    }
    stream_->WritesDone().ok();  // a broken stream shows up in Receive
  }

  // Sender thread, receiver done: replaces the failed stream. A short
  // pause so that a server shedding load is not hammered with new calls
  // (the shed is what is being measured, not the client's spin rate).
  void Reopen() {
    receiver_.join();
    absl::SleepFor(kReopenPause);
    stream_ = client_->OpenDecodeStream(sessions_.front());
    {
      absl::MutexLock l(&mu_);
      in_flight_.clear();
      receiver_done_ = false;
      retryable_end_ = false;
    }
    receiver_ = std::thread([this] { ReceiveLoop(); });
  }

  void ReceiveLoop() {
    const int64_t tokens = static_cast<int64_t>(sessions_.size());
    const int64_t queries = tokens * options_.layers * options_.query_heads;
    while (true) {
      absl::StatusOr<v1::DecodeResponse> response = stream_->Receive();
      const absl::Time now = absl::Now();
      if (!response.ok()) {
        if (!absl::IsOutOfRange(response.status())) {
          stats_->RecordError(
              absl::StatusCodeToString(response.status().code()));
        }
        if (absl::IsResourceExhausted(response.status()) ||
            absl::IsUnavailable(response.status())) {
          absl::MutexLock l(&mu_);
          retryable_end_ = true;
        }
        break;
      }
      InFlight sent;
      {
        absl::MutexLock l(&mu_);
        if (in_flight_.empty() ||
            in_flight_.front().step_id != response->step_id()) {
          in_flight_.clear();
          stats_->RecordError("OUT_OF_ORDER_RESPONSE");
          // Unread responses would keep Finish waiting: abort the call.
          stream_->Cancel();
          break;
        }
        sent = in_flight_.front();
        in_flight_.pop_front();
      }
      stats_->RecordStep(sent.intended, now, *response, sent.bytes, tokens,
                         queries);
    }
    stream_->Finish().ok();  // already accounted for above
    absl::MutexLock l(&mu_);
    receiver_done_ = true;
  }

  const LoadgenOptions& options_;
  AttentionClient* const client_;
  const std::vector<std::string> sessions_;
  Stats* const stats_;
  std::vector<v1::DecodeRequest> templates_;  // sender thread only
  int64_t request_bytes_[kVariants] = {};
  std::unique_ptr<DecodeStream> stream_;
  std::thread sender_;
  std::thread receiver_;

  absl::Mutex mu_;
  std::deque<InFlight> in_flight_ ABSL_GUARDED_BY(mu_);
  bool receiver_done_ ABSL_GUARDED_BY(mu_) = false;
  // The stream ended with RESOURCE_EXHAUSTED or UNAVAILABLE.
  bool retryable_end_ ABSL_GUARDED_BY(mu_) = false;
};

absl::Status Prefill(const LoadgenOptions& o, AttentionClient* client,
                     const std::string& id, std::mt19937_64& rng) {
  const int d = o.head_dim;
  std::vector<int64_t> shape = {o.layers, o.kv_heads, o.prefill, d};
  const size_t n = static_cast<size_t>(o.layers) * o.kv_heads * o.prefill * d;
  std::vector<float> k = RandomVector(rng, n);
  std::vector<float> v = RandomVector(rng, n);
  AppendOptions append;
  append.dtype = o.dtype;
  append.chunk_tokens = std::max<int64_t>(
      1, (int64_t{2} << 20) / (int64_t{8} * o.layers * o.kv_heads * d));
  return client
      ->AppendTokens(id, AttentionClient::kAllLayers, {shape, k}, {shape, v},
                     append)
      .status();
}

}  // namespace

int64_t LoadgenReport::total_errors() const {
  int64_t n = 0;
  for (const auto& [code, count] : errors) n += count;
  return n;
}

absl::StatusOr<LoadgenReport> RunLoadgen(const LoadgenOptions& options,
                                         const std::atomic<bool>* stop) {
  KVSKETCH_RETURN_IF_ERROR(Validate(options));
  KVSKETCH_ASSIGN_OR_RETURN(
      std::unique_ptr<AttentionClient> client,
      AttentionClient::Open(options.server, options.client));

  // --- Setup: sessions (and their context) ---
  v1::SessionConfig config;
  config.set_num_layers(options.layers);
  config.set_num_kv_heads(options.kv_heads);
  config.set_num_query_heads(options.query_heads);
  config.set_head_dim(options.head_dim);
  config.set_spec(options.spec);
  std::vector<std::string> ids;
  auto cleanup = [&] {
    if (options.keep_sessions) return;
    for (const std::string& id : ids) client->DeleteSession(id).ok();
  };
  std::mt19937_64 rng(options.seed);
  // Client-chosen ids (see LoadgenOptions::session_prefix): a server-chosen
  // id would be unknown to a proxy when it routes the CreateSession call.
  std::string prefix = options.session_prefix;
  if (prefix.empty()) {
    prefix = absl::StrFormat("lg-%08x-", std::random_device()());
  }
  for (int i = 0; i < options.sessions; ++i) {
    absl::StatusOr<v1::SessionInfo> info =
        client->CreateSession(config, absl::StrCat(prefix, i));
    if (!info.ok()) {
      cleanup();
      return absl::Status(
          info.status().code(),
          absl::StrCat("creating session ", i, ": ", info.status().message()));
    }
    ids.push_back(info->session_id());
    if (options.prefill > 0) {
      if (absl::Status s = Prefill(options, client.get(), ids.back(), rng);
          !s.ok()) {
        cleanup();
        return absl::Status(
            s.code(),
            absl::StrCat("prefilling session ", ids.back(), ": ", s.message()));
      }
    }
  }

  // --- Run ---
  const absl::Time start = absl::Now();
  const absl::Time measure_start = start + options.warmup;
  const absl::Time end = measure_start + options.duration;
  Stats stats(measure_start);
  std::vector<std::unique_ptr<StreamWorker>> workers;
  for (size_t i = 0; i < ids.size(); i += options.sessions_per_stream) {
    std::vector<std::string> group(
        ids.begin() + i,
        ids.begin() + std::min(ids.size(), i + options.sessions_per_stream));
    workers.push_back(
        std::make_unique<StreamWorker>(options, client.get(), std::move(group),
                                       options.seed * 7919 + i, &stats));
  }
  for (auto& w : workers) w->Start(start, end, stop);

  absl::Time last = start;
  const bool progress = options.progress_interval > absl::ZeroDuration();
  while (absl::Now() < end && !stop->load()) {
    absl::SleepFor(std::min(absl::Milliseconds(50), end - absl::Now()));
    const absl::Time now = absl::Now();
    if (progress && now - last >= options.progress_interval) {
      int64_t steps = 0, p99 = 0, total = 0;
      stats.TakeInterval(&steps, &p99, &total);
      std::cerr << absl::StrFormat(
                       "[%6.1fs] steps %d  steps/s %.1f  p99 %.3f ms%s",
                       absl::ToDoubleSeconds(now - start), total,
                       steps / absl::ToDoubleSeconds(now - last), p99 / 1e6,
                       now < measure_start ? "  (warmup)" : "")
                << std::endl;
      last = now;
    }
  }
  const absl::Time stopped = std::min(absl::Now(), end);
  const absl::Time drain_deadline = absl::Now() + kDrainTimeout;
  for (auto& w : workers) w->Join(drain_deadline);

  LoadgenReport report;
  report.streams = static_cast<int>(workers.size());
  report.interrupted = stop->load();
  report.seconds =
      std::max(0.0, absl::ToDoubleSeconds(stopped - measure_start));
  stats.Fill(&report);
  workers.clear();
  cleanup();
  return report;
}

std::string ReportToJson(const LoadgenOptions& o, const LoadgenReport& r) {
  const double s = r.seconds > 0 ? r.seconds : 1;
  const LatencyHistogram& h = r.latency_ns;
  auto ms = [&](double q) { return h.Percentile(q) / 1e6; };
  std::vector<std::string> errors;
  for (const auto& [code, count] : r.errors) {
    errors.push_back(absl::StrFormat("%s: %d", JsonString(code), count));
  }
  return absl::StrFormat(
      "{\"server\": %s, \"sessions\": %d, \"streams\": %d, "
      "\"sessions_per_stream\": %d, \"layers\": %d, \"kv_heads\": %d, "
      "\"query_heads\": %d, \"head_dim\": %d, \"spec\": %s, "
      "\"prefill\": %d, \"rate\": %g, \"interrupted\": %s, "
      "\"seconds\": %.3f, \"steps\": %d, \"tokens\": %d, \"queries\": %d, "
      "\"bytes_sent\": %d, \"bytes_received\": %d, "
      "\"steps_per_second\": %.3f, \"tokens_per_second\": %.3f, "
      "\"queries_per_second\": %.3f, \"mb_per_second_sent\": %.3f, "
      "\"latency_ms\": {\"p50\": %.4f, \"p90\": %.4f, \"p99\": %.4f, "
      "\"p99_9\": %.4f, \"max\": %.4f, \"mean\": %.4f, \"min\": %.4f}, "
      "\"errors_total\": %d, \"errors\": {%s}}",
      JsonString(o.server), o.sessions, r.streams, o.sessions_per_stream,
      o.layers, o.kv_heads, o.query_heads, o.head_dim, JsonString(o.spec),
      o.prefill, o.rate, r.interrupted ? "true" : "false", r.seconds, r.steps,
      r.tokens, r.queries, r.bytes_sent, r.bytes_received, r.steps / s,
      r.tokens / s, r.queries / s, r.bytes_sent / s / 1e6, ms(0.5), ms(0.9),
      ms(0.99), ms(0.999), h.max() / 1e6, h.mean() / 1e6, h.min() / 1e6,
      r.total_errors(), absl::StrJoin(errors, ", "));
}

std::string ReportToText(const LoadgenOptions& o, const LoadgenReport& r) {
  const double s = r.seconds > 0 ? r.seconds : 1;
  const LatencyHistogram& h = r.latency_ns;
  auto ms = [&](double q) { return h.Percentile(q) / 1e6; };
  std::string out = absl::StrFormat(
      "kvsketch-loadgen: %d sessions on %d streams, %d layers, %d kv / %d q "
      "heads, d=%d, spec %s, prefill %d, %s%s\n",
      o.sessions, r.streams, o.layers, o.kv_heads, o.query_heads, o.head_dim,
      o.spec, o.prefill,
      o.rate > 0 ? absl::StrFormat("open loop %g steps/s per stream", o.rate)
                 : std::string("closed loop"),
      r.interrupted ? " (interrupted)" : "");
  absl::StrAppendFormat(
      &out,
      "measured %.2f s: %d steps\n"
      "throughput: %.1f steps/s, %.1f tokens/s, %.1f queries/s, %.2f MB/s "
      "sent\n"
      "step latency (ms): p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max "
      "%.3f  mean %.3f\n",
      r.seconds, r.steps, r.steps / s, r.tokens / s, r.queries / s,
      r.bytes_sent / s / 1e6, ms(0.5), ms(0.9), ms(0.99), ms(0.999),
      h.max() / 1e6, h.mean() / 1e6);
  if (r.errors.empty()) {
    absl::StrAppend(&out, "errors: none\n");
  } else {
    std::vector<std::string> parts;
    for (const auto& [code, count] : r.errors) {
      parts.push_back(absl::StrCat(code, "=", count));
    }
    absl::StrAppend(&out, "errors: ", absl::StrJoin(parts, " "), "\n");
  }
  return out;
}

}  // namespace kvsketch::client
