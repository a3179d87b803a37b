// File: core/status_macros.h
//
// Early-return helpers for absl::Status / absl::StatusOr. Debian's abseil
// (20220623) predates ABSL_RETURN_IF_ERROR / ABSL_ASSIGN_OR_RETURN, so we
// keep our own, prefixed KVSKETCH_.
//
//   KVSKETCH_RETURN_IF_ERROR(file.Write(bytes));
//   KVSKETCH_ASSIGN_OR_RETURN(auto approx, CreateApproximator(spec, shape));
//   KVSKETCH_CHECK(n >= 0) << is not supported: CHECK aborts with a message.
#ifndef KVSKETCH_CORE_STATUS_MACROS_H_
#define KVSKETCH_CORE_STATUS_MACROS_H_

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define KVSKETCH_INTERNAL_CONCAT_(a, b) a##b
#define KVSKETCH_INTERNAL_CONCAT(a, b) KVSKETCH_INTERNAL_CONCAT_(a, b)

#define KVSKETCH_RETURN_IF_ERROR(expr)                   \
  do {                                                   \
    ::absl::Status kvsketch_status_ = (expr);            \
    if (!kvsketch_status_.ok()) return kvsketch_status_; \
  } while (false)

#define KVSKETCH_INTERNAL_ASSIGN_OR_RETURN(tmp, lhs, expr) \
  auto tmp = (expr);                                       \
  if (!tmp.ok()) return std::move(tmp).status();           \
  lhs = std::move(tmp).value()

#define KVSKETCH_ASSIGN_OR_RETURN(lhs, expr) \
  KVSKETCH_INTERNAL_ASSIGN_OR_RETURN(        \
      KVSKETCH_INTERNAL_CONCAT(kvsketch_statusor_, __LINE__), lhs, expr)

// Broken internal invariants (programmer errors, never user input) abort.
#define KVSKETCH_CHECK(cond)                                               \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "%s:%d: KVSKETCH_CHECK failed: %s\n", __FILE__, \
                   __LINE__, #cond);                                       \
      std::abort();                                                        \
    }                                                                      \
  } while (false)

#endif  // KVSKETCH_CORE_STATUS_MACROS_H_
