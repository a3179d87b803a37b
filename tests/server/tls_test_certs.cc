// File: tests/server/tls_test_certs.cc
#include "tests/server/tls_test_certs.h"

#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kvsketch::testing {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs one shell command in `dir`, output appended to dir/openssl.log.
absl::Status Run(const std::string& dir, const std::string& command) {
  const std::string log = dir + "/openssl.log";
  const std::string full =
      absl::StrCat("cd '", dir, "' && (", command, ") >>'", log, "' 2>&1");
  if (std::system(full.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(
        "certificate generation failed: ", command, "\n", Slurp(log)));
  }
  return absl::OkStatus();
}

constexpr char kNewKey[] =
    "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

// A CA (self-signed, CA:TRUE from openssl's default v3_ca section).
std::string MakeCa(const std::string& name) {
  return absl::StrCat("openssl req -x509 ", kNewKey, " -keyout ", name,
                      ".key -out ", name, ".crt -days 2 -subj /CN=", name);
}

// A leaf `name` signed by `ca`, with the extensions in name.ext.
std::string MakeLeaf(const std::string& name, const std::string& ca) {
  return absl::StrCat("openssl req ", kNewKey, " -keyout ", name, ".key -out ",
                      name, ".csr -subj /CN=", name,
                      " && openssl x509 -req -in ", name, ".csr -CA ", ca,
                      ".crt -CAkey ", ca, ".key -CAcreateserial -days 2 -out ",
                      name, ".crt -extfile ", name, ".ext");
}

}  // namespace

std::string WriteTestFile(const std::string& dir, const std::string& name,
                          const std::string& contents) {
  const std::string path = dir + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

std::string MakeUniqueDir(const std::string& parent) {
  std::string templ = parent;
  if (!templ.empty() && templ.back() != '/') templ += '/';
  templ += "kvsketch-test-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    std::fprintf(stderr, "mkdtemp %s failed\n", templ.c_str());
    std::abort();
  }
  return buf.data();
}

absl::StatusOr<TestCerts> MakeTestCerts(const std::string& parent) {
  TestCerts c;
  c.dir = MakeUniqueDir(parent);
  WriteTestFile(c.dir, "server.ext",
                "basicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  const std::string client_ext =
      "basicConstraints=CA:FALSE\n"
      "keyUsage=digitalSignature\n"
      "extendedKeyUsage=clientAuth\n";
  WriteTestFile(c.dir, "client.ext", client_ext);
  WriteTestFile(c.dir, "outsider.ext", client_ext);
  for (const std::string& cmd :
       {MakeCa("ca"), MakeCa("other-ca"), MakeLeaf("server", "ca"),
        MakeLeaf("client", "ca"), MakeLeaf("outsider", "other-ca")}) {
    if (absl::Status s = Run(c.dir, cmd); !s.ok()) return s;
  }
  c.ca_cert = c.dir + "/ca.crt";
  c.server_cert = c.dir + "/server.crt";
  c.server_key = c.dir + "/server.key";
  c.client_cert = c.dir + "/client.crt";
  c.client_key = c.dir + "/client.key";
  c.other_ca_cert = c.dir + "/other-ca.crt";
  c.other_client_cert = c.dir + "/outsider.crt";
  c.other_client_key = c.dir + "/outsider.key";
  return c;
}

}  // namespace kvsketch::testing
