// Driver for the Python interoperability test: `interop write <dir>` writes a model's parameters and
// the expected values; `interop read <dir>` reads what Python's safetensors wrote and compares.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bodies/scenarios.hpp"
#include "peft/backend/eigen.hpp"
#include "peft/io/checkpoint.hpp"
#include "peft/io/safetensors.hpp"

using namespace peft;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: interop write|read <dir>\n");
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  try {
    if (mode == "write") {
      using B = backend::eigen<float>;
      B::context ctx;
      models::bert_for_sequence_classification<B, plan<methods::lora<roles::query, roles::value>>> m(
          ctx, test::tiny_bert_config(), {.num_labels = 2}, {lora_config{.r = 2, .alpha = 4}});
      test::randomize_parameters(ctx, m, 1, 0.5);
      io::save_checkpoint(ctx, m, dir + "/from_cpp.safetensors");
      nlohmann::json expected = {{"metadata", {{"format", "pt"}}}, {"tensors", nlohmann::json::object()}};
      m.visit_parameters("", [&](const std::string& name, const auto& p) {
        std::vector<std::size_t> shape;
        for (std::size_t i = 0; i < p.value.shape().rank(); ++i) shape.push_back(p.value.shape()[i]);
        expected["tensors"][name] = {{"shape", shape}, {"values", B::copy_to_host(ctx, p.value)}};
      });
      std::ofstream(dir + "/from_cpp.json") << expected.dump();
      std::printf("peft wrote %zu tensors\n", expected["tensors"].size());
      return 0;
    }
    if (mode == "read") {
      const auto f = io::safetensors_file::open(dir + "/from_python.safetensors");
      std::ifstream in(dir + "/from_python.json");
      const auto expected = nlohmann::json::parse(in);
      if (f.metadata().at("origin") != "python") throw std::runtime_error("metadata lost");
      std::size_t checked = 0;
      for (auto it = expected.begin(); it != expected.end(); ++it) {
        const auto* t = f.find(it.key());
        if (!t) throw std::runtime_error("missing tensor " + it.key());
        if (t->shape != it.value()["shape"].get<std::vector<std::size_t>>()) throw std::runtime_error("shape of " + it.key());
        const auto got = f.read<double>(*t);
        const auto want = it.value()["values"].get<std::vector<double>>();
        if (got != want) throw std::runtime_error("values of " + it.key());
        ++checked;
      }
      std::printf("peft read %zu tensors written by python (F32, F64, F16, I64): values and shapes match\n", checked);
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "interop %s failed: %s\n", mode.c_str(), e.what());
    return 1;
  }
  return 2;
}
