// What c10d.cpp and nccl.cpp share: the handles given to Rust and the way
// a C++ exception becomes an error message.
#pragma once
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <cstdlib>
#include <cstring>
#include <string>

struct rgpt_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct rgpt_group {
  c10::intrusive_ptr<c10d::Backend> backend;
  int world_size;
  // NCCL averages itself; Gloo sums and the shim divides.
  bool native_avg;
};

namespace rgpt_dist {

inline char* message(const std::string& text) {
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

// Runs `body`; an exception becomes `what: <first line of its text>` (c10d
// appends a C++ stack trace after the first line).
template <typename F>
char* run(const char* what, F body) {
  try {
    body();
    return nullptr;
  } catch (const std::exception& e) {
    std::string text = e.what();
    return message(std::string(what) + ": " + text.substr(0, text.find('\n')));
  } catch (...) {
    return message(std::string(what) + ": unknown C++ exception");
  }
}

}  // namespace rgpt_dist
