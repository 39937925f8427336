#pragma once
// A fresh directory under the system's temporary directory, removed with everything in it when the
// object goes out of scope.

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include "peft/core/error.hpp"

namespace peft::test {

struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "peft-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw error("cannot create a temporary directory from " + tmpl);
    path = tmpl;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

}  // namespace peft::test
