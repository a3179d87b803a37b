// File: tests/server/tls_test_certs.h
//
// Throw-away certificates for the TLS tests, made at test time with the
// openssl CLI (scripts/install-deps.sh installs it with the test packages):
// nothing secret is checked in, and nothing expires in the repository.
//
//   a CA, a server certificate it signs (SAN DNS:localhost, IP:127.0.0.1),
//   a client certificate it signs, and a second, unrelated CA with its own
//   client certificate (what an outsider would present).
//
// P-256 keys: generating all of them takes ~50 ms.
#ifndef KVSKETCH_TESTS_SERVER_TLS_TEST_CERTS_H_
#define KVSKETCH_TESTS_SERVER_TLS_TEST_CERTS_H_

#include <string>

#include "absl/status/statusor.h"

namespace kvsketch::testing {

struct TestCerts {
  std::string dir;  // every file below lives here
  std::string ca_cert;
  std::string server_cert;
  std::string server_key;
  std::string client_cert;
  std::string client_key;
  std::string other_ca_cert;
  std::string other_client_cert;  // signed by other_ca
  std::string other_client_key;
};

// Generates the set in a fresh directory under `parent` (e.g.
// ::testing::TempDir()). Internal with openssl's output if a step fails.
absl::StatusOr<TestCerts> MakeTestCerts(const std::string& parent);

// A fresh, empty directory under `parent` (mkdtemp): tests that run
// concurrently (ctest -j, several checkouts) never share files.
std::string MakeUniqueDir(const std::string& parent);

// Writes `contents` to dir/name and returns the path (aborts on failure:
// tests cannot go on without their input files).
std::string WriteTestFile(const std::string& dir, const std::string& name,
                          const std::string& contents);

}  // namespace kvsketch::testing

#endif  // KVSKETCH_TESTS_SERVER_TLS_TEST_CERTS_H_
