// File: tests/core/npy_test.cc
//
// .npy round trips, files written by real numpy (/usr/bin/python3), files we
// write read back by numpy, and malformed inputs rejected with a reason.
#include "core/io/npy.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/io/byte_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvsketch {
namespace {

using ::testing::HasSubstr;

constexpr char kPython[] = "/usr/bin/python3";

class NpyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "kvsketch_npy_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::system(absl::StrCat("rm -rf '", dir_, "'").c_str());
  }
  // Runs a python snippet with numpy imported as np and D the temp dir.
  void Python(const std::string& code) {
    const std::string script = absl::StrCat(dir_, "/script.py");
    std::ofstream(script) << "import numpy as np\nD = '" << dir_ << "'\n"
                          << code << "\n";
    const int rc = std::system(absl::StrCat(kPython, " ", script).c_str());
    ASSERT_EQ(rc, 0) << "python failed: " << code;
  }
  std::string Path(const std::string& name) const {
    return absl::StrCat(dir_, "/", name);
  }
  std::string dir_;
};

TEST_F(NpyTest, SerializeParseRoundTrip) {
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
           {}, {0}, {5}, {2, 3}, {2, 0, 4}, {1, 2, 3, 4}}) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> data(n);
    for (int64_t i = 0; i < n; ++i)
      data[i] = 0.5f * static_cast<float>(i) - 3.25f;
    const std::string bytes = SerializeNpy(shape, data);
    EXPECT_EQ(bytes.find('\n'), bytes.size() - n * 4 - 1);
    EXPECT_EQ((bytes.size() - n * 4) % 64, 0u);
    auto back = ParseNpy(bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->shape, shape);
    EXPECT_EQ(back->data, data);
  }
}

TEST_F(NpyTest, ReadsFilesWrittenByNumpy) {
  Python(
      "rng = np.random.default_rng(3)\n"
      "a = rng.standard_normal((2, 3, 4, 5))\n"
      "np.save(D + '/f8.npy', a)\n"
      "np.save(D + '/f4.npy', a.astype('<f4'))\n"
      "np.save(D + '/f2.npy', a.astype('<f2'))\n"
      "np.save(D + '/v1d.npy', np.arange(7, dtype='<f4'))\n"
      "np.save(D + '/v2d.npy', np.arange(6, dtype='<f4').reshape(2, 3))\n"
      "np.save(D + '/v3d.npy', np.arange(24, dtype='<f2').reshape(2, 3, 4))\n"
      "np.lib.format.write_array(open(D + '/v2.npy', 'wb'),"
      " a.astype('<f4'), version=(2, 0))\n"
      "a.astype('<f4').tofile(D + '/raw.bin')\n"
      "a.astype('<f2').astype('<f4').tofile(D + '/raw_f2.bin')\n");
  std::ifstream raw_in(Path("raw.bin"), std::ios::binary);
  std::vector<float> raw(120);
  raw_in.read(reinterpret_cast<char*>(raw.data()), 480);
  std::ifstream raw2_in(Path("raw_f2.bin"), std::ios::binary);
  std::vector<float> raw_f2(120);
  raw2_in.read(reinterpret_cast<char*>(raw_f2.data()), 480);
  const std::vector<int64_t> shape4 = {2, 3, 4, 5};
  for (const char* name : {"f8.npy", "f4.npy", "v2.npy"}) {
    auto a = ReadNpy(Path(name));
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->shape, shape4) << name;
    // f8 is narrowed with round-to-nearest, the same as numpy's astype.
    EXPECT_EQ(a->data, raw) << name;
  }
  auto f2 = ReadNpy(Path("f2.npy"));
  ASSERT_TRUE(f2.ok()) << f2.status();
  EXPECT_EQ(f2->data, raw_f2);
  auto v1 = ReadNpy(Path("v1d.npy"));
  ASSERT_TRUE(v1.ok());
  EXPECT_EQ(v1->shape, std::vector<int64_t>{7});
  EXPECT_EQ(v1->data[6], 6.0f);
  auto v2 = ReadNpy(Path("v2d.npy"));
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->shape, (std::vector<int64_t>{2, 3}));
  auto v3 = ReadNpy(Path("v3d.npy"));
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ(v3->shape, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(v3->data[23], 23.0f);
}

TEST_F(NpyTest, NumpyReadsFilesWeWrite) {
  std::vector<float> data(2 * 3 * 4);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<float>(i) / 7.0f - 1.0f;
  ASSERT_TRUE(WriteNpy(Path("ours.npy"), {2, 3, 4}, data).ok());
  ASSERT_TRUE(WriteNpy(Path("ours1.npy"), {5}, {data.data(), 5}).ok());
  std::ostringstream expect;
  expect.precision(9);
  for (size_t i = 0; i < data.size(); ++i) expect << (i ? ", " : "") << data[i];
  Python(
      absl::StrCat("a = np.load(D + '/ours.npy')\n"
                   "assert a.dtype == np.dtype('<f4'), a.dtype\n"
                   "assert a.shape == (2, 3, 4), a.shape\n"
                   "want = np.array([",
                   expect.str(),
                   "], dtype=np.float32).reshape(2, 3, 4)\n"
                   "assert np.array_equal(a, want), (a, want)\n"
                   "b = np.load(D + '/ours1.npy')\n"
                   "assert b.shape == (5,), b.shape\n"
                   "assert np.array_equal(b, want.ravel()[:5])\n"));
  // No temporary file is left behind.
  EXPECT_EQ(
      access(absl::StrCat(Path("ours.npy"), ".tmp.", getpid()).c_str(), F_OK),
      -1);
  EXPECT_EQ(WriteNpy(Path("bad.npy"), {2, 2}, {data.data(), 3}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadNpy(Path("missing.npy")).status().code(),
            absl::StatusCode::kNotFound);
}

std::string WithHeader(const std::string& dict, int major = 1,
                       size_t data_bytes = 0) {
  std::string header = dict;
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  ByteWriter w;
  if (major == 1) {
    out.push_back(static_cast<char>(header.size() & 0xff));
    out.push_back(static_cast<char>(header.size() >> 8));
  } else {
    w.PutU32(static_cast<uint32_t>(header.size()));
    out += w.data();
  }
  out += header;
  out += std::string(data_bytes, '\0');
  return out;
}

TEST_F(NpyTest, AcceptsByteOrderVariantsForF4) {
  for (const char* order : {"<", "|", "="}) {
    auto a = ParseNpy(WithHeader(
        absl::StrCat("{'descr': '", order,
                     "f4', 'fortran_order': False, 'shape': (2,), }\n"),
        1, 8));
    EXPECT_TRUE(a.ok()) << order << " " << a.status();
  }
  auto v3 = ParseNpy(WithHeader(
      "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1), }\n", 3, 12));
  EXPECT_TRUE(v3.ok()) << v3.status();
}

TEST_F(NpyTest, RejectsMalformedInput) {
  struct Bad {
    std::string bytes;
    absl::StatusCode code;
    const char* message;
  };
  const auto kInv = absl::StatusCode::kInvalidArgument;
  const auto kLoss = absl::StatusCode::kDataLoss;
  const std::string ok_dict =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }\n";
  const Bad bad[] = {
      {"", kLoss, "truncated"},
      {"NUMPY\x01\x00", kInv, "bad magic"},
      {WithHeader(ok_dict, 4, 16), kInv, "format version 4"},
      {WithHeader(ok_dict, 1, 15), kLoss, "truncated"},
      {WithHeader(ok_dict, 1, 17), kInv, "size mismatch"},
      {WithHeader("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }",
                  1, 16),
       kInv, "big-endian"},
      {WithHeader("{'descr': '|O', 'fortran_order': False, 'shape': (2, 2), }",
                  1, 32),
       kInv, "unsupported dtype"},
      {WithHeader("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }",
                  1, 16),
       kInv, "unsupported dtype"},
      {WithHeader("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                  1, 16),
       kInv, "fortran_order"},
      {WithHeader("{'descr': '<f4', 'shape': (2, 2), }", 1, 16), kInv,
       "missing"},
      {WithHeader(
           "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -2), }", 1,
           16),
       kInv, "non-negative integer"},
      {WithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': "
                  "(4294967296, 4294967296, 4294967296), }",
                  1, 16),
       kLoss, "truncated"},
      {WithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': "
                  "(99999999999999999999999,), }",
                  1, 16),
       kInv, "too large"},
      {WithHeader("{'descr': [('a', '<f4')], 'fortran_order': False, "
                  "'shape': (2,), }",
                  1, 8),
       kInv, "quoted string"},
      {WithHeader("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, "
                  "'shape': (2,), }",
                  1, 8),
       kInv, "repeated key"},
      {WithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), "
                  "'extra': 1}",
                  1, 8),
       kInv, "unexpected"},
      {WithHeader("{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", 1,
                  8),
       kInv, "malformed"},
      {WithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x",
                  1, 8),
       kInv, "trailing"},
      {WithHeader(std::string("{'descr': '<f4', 'fortran_order': False, "
                              "'shape': (2,)}\xff"),
                  1, 8),
       kInv, "non-ASCII"},
      {std::string("\x93NUMPY\x02\x00\xff\xff\xff\xff", 12), kLoss,
       "header claims"},
  };
  for (const Bad& b : bad) {
    auto r = ParseNpy(b.bytes, "t.npy");
    ASSERT_FALSE(r.ok()) << b.message;
    EXPECT_EQ(r.status().code(), b.code) << b.message << ": " << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr(b.message));
    EXPECT_THAT(r.status().message(), HasSubstr("t.npy"));
  }
}

// Every truncation and every single-byte corruption of a small file either
// parses or fails cleanly (a smoke test of the parser's bounds checks; the
// project's fuzzer goes further).
TEST_F(NpyTest, TruncationsAndCorruptionsNeverCrash) {
  const std::vector<float> data = {1, 2, 3, 4, 5, 6};
  const std::string good = SerializeNpy({2, 3}, data);
  for (size_t cut = 0; cut < good.size(); ++cut) {
    EXPECT_FALSE(ParseNpy(good.substr(0, cut)).ok()) << cut;
  }
  int accepted = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (int x : {0x01, 0x20, 0x80, 0xff}) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ x);
      auto r = ParseNpy(bad);
      if (r.ok()) {
        ++accepted;
        int64_t n = 1;
        for (int64_t d : r->shape) n *= d;
        EXPECT_EQ(static_cast<int64_t>(r->data.size()), n);
      }
    }
  }
  EXPECT_GT(accepted, 0);  // flips in the data and padding are legal
}

}  // namespace
}  // namespace kvsketch
