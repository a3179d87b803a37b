// File: core/tensor.h
//
// Non-owning views of dense row-major float matrices, the one data layout of
// the library: element (i, j) of an r×c matrix is data[i * c + j]. Views are
// cheap to copy and never own memory; the caller keeps the buffer alive.
#ifndef KVSKETCH_CORE_TENSOR_H_
#define KVSKETCH_CORE_TENSOR_H_

#include <cstdint>

namespace kvsketch {

struct ConstMatrixView {
  const float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;

  const float* row(int64_t i) const { return data + i * cols; }
  int64_t size() const { return rows * cols; }
};

struct MatrixView {
  float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;

  float* row(int64_t i) const { return data + i * cols; }
  int64_t size() const { return rows * cols; }
  operator ConstMatrixView() const { return {data, rows, cols}; }
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_TENSOR_H_
