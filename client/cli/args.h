// File: client/cli/args.h
//
// A small command-line parser for `kvsketch <command> [options] [args]`.
// absl flags are process-global, which fits one binary with one flag set but
// not subcommands that each accept different options; this parser is local
// to a command and reports problems as values, never by exiting.
//
// Accepted forms: `--name=value`, `--name value`, `--flag` (boolean), `--`
// ends option parsing. Options marked repeated may be given several times.
#ifndef KVSKETCH_CLIENT_CLI_ARGS_H_
#define KVSKETCH_CLIENT_CLI_ARGS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace kvsketch::client::cli {

struct OptionSpec {
  std::string name{};        // without the leading "--"
  std::string value_name{};  // "N", "FILE"; "" for a boolean flag
  std::string default_value{};
  std::string help{};
  bool required = false;
  bool repeated = false;

  bool is_flag() const { return value_name.empty(); }
};

class ParsedArgs {
 public:
  // The last value given, else the option's default.
  const std::string& Get(absl::string_view name) const;
  // Every value given (repeated options), in order.
  const std::vector<std::string>& GetAll(absl::string_view name) const;
  // True if given on the command line (a flag: set).
  bool Has(absl::string_view name) const;
  bool Flag(absl::string_view name) const { return Has(name); }

  // Typed getters: InvalidArgument naming "--name" for a malformed value.
  absl::StatusOr<int64_t> GetInt(absl::string_view name) const;
  absl::StatusOr<double> GetDouble(absl::string_view name) const;
  // "30s", "500ms", "2m", or a plain number of seconds.
  absl::StatusOr<absl::Duration> GetDuration(absl::string_view name) const;

  const std::vector<std::string>& positional() const { return positional_; }
  bool help() const { return help_; }

 private:
  friend absl::StatusOr<ParsedArgs> ParseArgs(absl::Span<const OptionSpec>,
                                              absl::Span<const char* const>);
  std::map<std::string, std::vector<std::string>, std::less<>> given_;
  std::map<std::string, std::string, std::less<>> defaults_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

// Parses `args` (without the program and command names). `--help`/`-h` sets
// help() and skips the required-option check. InvalidArgument with a
// message for an unknown option (listing the valid ones), a missing value,
// a value given to a flag, a repeated non-repeatable option or a missing
// required option.
absl::StatusOr<ParsedArgs> ParseArgs(absl::Span<const OptionSpec> specs,
                                     absl::Span<const char* const> args);

// The `--help` text: synopsis line, description, one line per option with
// its default.
std::string FormatUsage(absl::string_view program, absl::string_view synopsis,
                        absl::string_view description,
                        absl::Span<const OptionSpec> specs);

}  // namespace kvsketch::client::cli

#endif  // KVSKETCH_CLIENT_CLI_ARGS_H_
