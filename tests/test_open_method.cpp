// An open method: a per-channel output scale, y = s ⊙ (W x + b), defined here and nowhere else. With
// no other file touched it trains (finite differences and an SGD run), counts its memory, saves and
// loads in the PEFT adapter layout under its own peft_type, composes with LoRA in one plan, and merges
// into a plain checkpoint. docs/adding-a-method.md walks through this file.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <fstream>
#include <regex>

#include "bodies/scenarios.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/loss/cross_entropy.hpp"
#include "peft/models/bert/memory.hpp"
#include "peft/optim/optimizer.hpp"
#include "peft/optim/sgd.hpp"
#include "peft/train/report.hpp"
#include "support/backends.hpp"
#include "support/gradcheck.hpp"

namespace demo {
using namespace peft;

/// 1. The options: what can be set at run time.
struct channel_scale_config {
  double init = 1.0;               ///< starting value of every scale (1: the identity)
  std::string target_modules{};    ///< a regular expression over module names; empty = all the roles
};

/// 2. The parameter group (a MethodGroup: never in a base checkpoint).
struct channel_scale_group {
  static constexpr std::string_view name = "channel_scale";
  static constexpr bool method_group = true;
};

/// 3. The layer: wraps whatever the earlier stages built and adds the parameter `channel_scale`.
template <class Inner>
class channel_scale_linear : public methods::linear_wrapper<Inner>, public visits_parameters<channel_scale_linear<Inner>> {
  friend visits_parameters<channel_scale_linear>;
  using methods::linear_wrapper<Inner>::inner_;

 public:
  using backend = typename Inner::backend;
  using B = backend;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;

  channel_scale_linear(typename B::context& ctx, const layers::linear_options& o, const method_config& cfg)
      : methods::linear_wrapper<Inner>(ctx, o, cfg) {
    const auto& c = cfg.get<channel_scale_config>();
    if (!methods::detail::run_time_selects(true, c.target_modules, o.name, "channel_scale")) return;
    scale_.value.resize(shape{o.out_features});
    B::fill(ctx, scale_.value, value_type(c.init));
    scale_.allocate_grad(ctx);
  }

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    const tensor& h = inner_.forward(ctx, x);
    if (!active() || merged_) return h;
    h_ = &h;
    expand(ctx, h);
    B::multiply(ctx, h, expanded_, y_);
    return y_;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!active()) return inner_.backward(ctx, dy);
    B::multiply(ctx, dy, *h_, product_);  // d s = sum over rows of dy * h
    B::sum_rows(ctx, product_, value_type(1), scale_.grad);
    B::multiply(ctx, dy, expanded_, dh_);  // d h = dy * s
    return inner_.backward(ctx, dh_);
  }

  /// W[i, :] *= s[i], b[i] *= s[i]; unmerge divides again.
  void merge(typename B::context& ctx) {
    merge_if_possible(inner_, ctx);
    if (active()) rescale(ctx, false);
    merged_ = true;
  }
  void unmerge(typename B::context& ctx) {
    if (active()) rescale(ctx, true);
    merged_ = false;
    unmerge_if_possible(inner_, ctx);
  }
  [[nodiscard]] bool merged() const noexcept { return merged_; }

  /// Memory: the inner layer's, then the expanded scale, the output, the product and the gradient.
  static std::uint64_t activation_elements(const layers::linear_site& s) {
    return Inner::activation_elements(s) + 4 * std::uint64_t(s.rows) * s.out;
  }

 private:
  [[nodiscard]] bool active() const noexcept { return !scale_.value.empty(); }
  void expand(typename B::context& ctx, const tensor& h) {  // copies of s, one per row of h
    ids_host_.assign(h.rows(), 0);
    B::copy_labels(ctx, ids_host_, ids_);
    expanded_.resize(h.shape());
    B::gather_rows(ctx, scale_.value, ids_, expanded_);  // s of shape [out] is one row of `out` columns
  }
  void rescale(typename B::context& ctx, bool divide) {
    const auto s = B::copy_to_host(ctx, scale_.value);
    auto& w = this->base_linear().weight().value;
    auto wh = B::copy_to_host(ctx, w);
    const std::size_t in = w.cols();
    for (std::size_t i = 0; i < wh.size(); ++i) wh[i] = divide ? wh[i] / s[i / in] : wh[i] * s[i / in];
    B::copy_from_host(ctx, wh, w.shape(), w);
    if (this->base_linear().has_bias()) {
      auto& b = this->base_linear().bias().value;
      auto bh = B::copy_to_host(ctx, b);
      for (std::size_t i = 0; i < bh.size(); ++i) bh[i] = divide ? bh[i] / s[i] : bh[i] * s[i];
      B::copy_from_host(ctx, bh, b.shape(), b);
    }
  }
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.inner_.visit_parameters(prefix, f);
    if (self.active()) f(prefix + "channel_scale", self.scale_);
  }

  parameter<B, channel_scale_group, true> scale_;
  bool merged_ = false;
  const tensor* h_ = nullptr;
  std::vector<std::int32_t> ids_host_;
  typename B::index_tensor ids_;
  tensor expanded_, y_, product_, dh_;
};

/// 4. How Hugging Face PEFT's adapter files spell it (a type PEFT does not have; the layout is PEFT's).
struct channel_scale_format {
  static constexpr std::string_view peft_type = "CHANNEL_SCALE";
  static void write_config(nlohmann::json& j, const channel_scale_config& c, const io::adapter_contents&) {
    j["scale_init"] = c.init;
    j["target_modules"] = c.target_modules;
  }
  static void read_config(const io::json_config& j, channel_scale_config& c) {
    j.read("scale_init", c.init);
    j.read("target_modules", c.target_modules);
  }
};

/// 5. The method itself: roles, stage (3: after every built-in method), and the pieces above.
template <roles::Role... Targets>
struct channel_scale {
  static constexpr std::string_view name = "channel_scale";
  static constexpr int stage = 3;
  using options = channel_scale_config;
  using groups = group_set<channel_scale_group>;
  using peft_format = channel_scale_format;
  template <class Role>
  static constexpr bool targets = (std::is_same_v<Role, Targets> || ...);
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = channel_scale_linear<Inner>;
};
}  // namespace demo

using namespace peft;
using test::cpu_double_backends;

namespace {
using scale_plan = plan<demo::channel_scale<roles::value, roles::ffn_out>>;
using lora_scale_plan = plan<demo::channel_scale<roles::value>, methods::lora<roles::query, roles::value>>;
const method_config cfg{demo::channel_scale_config{.init = 1.0}, lora_config{.r = 2, .alpha = 4}};

struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    char t[] = "/tmp/peft-open-method-XXXXXX";
    path = mkdtemp(t);
  }
  ~temp_dir() { std::filesystem::remove_all(path); }
};

template <class M>
std::vector<float> logits_of(backend::eigen<float>::context& ctx, M& m) {
  return backend::eigen<float>::copy_to_host(ctx, m.forward(ctx, test::tiny_batch()));
}
double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, double(std::abs(a[i] - b[i])));
  return d;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(open_method)

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients_and_placement, B, cpu_double_backends) {
  typename B::context ctx;
  ctx.training = true;
  models::bert_for_sequence_classification<B, lora_scale_plan> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  test::randomize_parameters(ctx, m, 2, 0.3);
  const auto err = test::check_model_gradients(ctx, m, test::tiny_batch());
  BOOST_TEST(err.empty(), err);
  std::vector<std::string> scales;
  m.visit_parameters("", [&](const std::string& n, const auto& p) {
    if (std::string_view(std::remove_cvref_t<decltype(p)>::group::name) == "channel_scale") scales.push_back(n);
  });
  BOOST_REQUIRE_EQUAL(scales.size(), 2u);  // one per layer, after LoRA on value (stage 3 wraps stage 0)
  BOOST_TEST(scales[0] == "bert.encoder.layer.0.attention.self.value.channel_scale");
}

BOOST_AUTO_TEST_CASE(trains_saves_loads_and_merges) {
  using B = backend::eigen<float>;
  temp_dir dir;
  B::context ctx;
  models::bert_for_sequence_classification<B, scale_plan> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  test::randomize_parameters(ctx, m, 3, 0.3);  // a "pretrained" base...
  m.visit_parameters("", [&](const std::string&, auto& p) {  // ...with the scales back at the identity
    if constexpr (std::is_same_v<typename std::remove_cvref_t<decltype(p)>::group, demo::channel_scale_group>)
      B::fill(ctx, p.value, 1.0f);
  });
  io::save_checkpoint(ctx, m, dir.path / "base.safetensors");
  const auto counts = count_parameters(m);
  BOOST_TEST(counts.trainable == 2u * (16u + 16u) + 16u * 3u + 3u);  // scales on value and FFN out, the head

  // Train: the loss on a fixed batch falls, and only the scales and the head move.
  const auto before = logits_of(ctx, m);
  optim::optimizer opt(m, optim::sgd{.lr = 0.5});
  loss::softmax_cross_entropy<B> ce;
  const std::vector<std::int32_t> labels{2, 0};
  double first = 0, last = 0;
  ctx.training = true;
  for (int step = 0; step < 30; ++step) {
    opt.zero_grad(ctx);
    const double l = ce.forward(ctx, m.forward(ctx, test::tiny_batch()), labels);
    (step == 0 ? first : last) = l;
    m.backward(ctx, ce.gradient());
    opt.step(ctx);
  }
  ctx.training = false;
  BOOST_TEST(last < 0.8 * first, "loss " << first << " -> " << last);  // measured: 1.013 -> 0.738
  const auto trained = logits_of(ctx, m);
  BOOST_TEST(max_diff(trained, before) > 1e-2);

  // Save: its own peft_type, its config keys, its tensors under their parameter names.
  io::save_peft_adapter(ctx, m, dir.path / "adapter", {.methods = cfg});
  std::ifstream in(dir.path / "adapter" / "adapter_config.json");
  const auto j = nlohmann::json::parse(in);
  BOOST_TEST(j["peft_type"] == "CHANNEL_SCALE");
  BOOST_TEST(j["scale_init"] == 1.0);
  const auto f = io::safetensors_file::open(dir.path / "adapter" / "adapter_model.safetensors");
  BOOST_TEST(f.find("base_model.model.bert.encoder.layer.1.output.dense.channel_scale"));
  BOOST_TEST(f.tensors().size() == 4u + 2u);  // 4 scales, the classifier's weight and bias

  // Load: config back through the method's format, weights into a fresh model on the same base.
  const auto info = io::read_peft_adapter_config<scale_plan>(dir.path / "adapter");
  BOOST_TEST(info.options.get<demo::channel_scale_config>().init == 1.0);
  BOOST_TEST((info.methods == std::vector<std::string>{"channel_scale"}));
  models::bert_for_sequence_classification<B, scale_plan> n(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 7},
                                                            info.options);
  io::load_checkpoint(ctx, n, dir.path / "base.safetensors");
  BOOST_TEST(io::load_peft_adapter(ctx, n, dir.path / "adapter").loaded == 6u);
  BOOST_TEST(max_diff(logits_of(ctx, n), trained) < 1e-6);

  // Merge: a plain BERT checkpoint that computes the same logits without the method.
  io::save_merged_checkpoint(ctx, n, dir.path / "merged", test::tiny_bert_config().to_json("BertForSequenceClassification"));
  BOOST_TEST(max_diff(logits_of(ctx, n), trained) < 1e-6);  // merge + unmerge left the model as it was
  models::bert_for_sequence_classification<B, plan<methods::full>> plain(ctx, test::tiny_bert_config(), {.num_labels = 3});
  const auto r = io::load_checkpoint(ctx, plain, dir.path / "merged" / "model.safetensors");
  BOOST_TEST(r.missing.empty(), r.str());
  BOOST_TEST(max_diff(logits_of(ctx, plain), trained) < 1e-5);

  // Memory: its layers report their buffers, so the estimate covers it.
  const auto mem = models::estimate_memory(m, cfg, 2, 8);
  const auto without = models::estimate_memory(plain, method_config{}, 2, 8, 2);
  BOOST_TEST(mem.activations > without.activations);
}

BOOST_AUTO_TEST_CASE(composes_with_lora_in_one_adapter_directory) {
  using B = backend::eigen<float>;
  temp_dir dir;
  B::context ctx;
  models::bert_for_sequence_classification<B, lora_scale_plan> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  test::randomize_parameters(ctx, m, 4, 0.3);
  io::save_checkpoint(ctx, m, dir.path / "all.safetensors");
  io::save_peft_adapter(ctx, m, dir.path / "adapter", {.methods = cfg});
  const auto info = io::read_peft_adapter_config<lora_scale_plan>(dir.path / "adapter");
  BOOST_TEST(info.peft_type == "PEFT_CPP");
  BOOST_TEST((info.methods == std::vector<std::string>{"channel_scale", "lora"}));
  BOOST_TEST(info.options.get<lora_config>().r == 2u);
  models::bert_for_sequence_classification<B, lora_scale_plan> n(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 9},
                                                                 info.options);
  io::load_checkpoint(ctx, n, dir.path / "all.safetensors");
  test::randomize_parameters(ctx, n, 77, 0.3);  // scramble, then restore base and adapter from files
  io::load_checkpoint(ctx, n, dir.path / "all.safetensors");
  io::load_peft_adapter(ctx, n, dir.path / "adapter");
  BOOST_TEST(max_diff(logits_of(ctx, n), logits_of(ctx, m)) < 1e-6);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(run_time_switches)

// A plan compiled with every method, with some switched off through their options, is the plan
// without them: the same parameters (names and values) and the same outputs, dropout included.
// peft-train relies on this to build one instantiation for every --method but full.
template <class Small>
void same_as_compiled(const method_config& switched, const char* what) {
  using B = backend::eigen<float>;
  using all_roles = methods::lora<roles::query, roles::key, roles::value, roles::attention_output, roles::ffn_in, roles::ffn_out>;
  using everything = plan<all_roles, methods::bitfit, methods::houlsby_adapter>;
  B::context ctx;
  ctx.training = true;
  models::bert_for_sequence_classification<B, everything> big(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 5}, switched);
  models::bert_for_sequence_classification<B, Small> small(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 5}, switched);
  std::vector<std::pair<std::string, std::vector<float>>> a, b;
  big.visit_parameters("", [&](const std::string& n, const auto& p) { a.emplace_back(n, B::copy_to_host(ctx, p.value)); });
  small.visit_parameters("", [&](const std::string& n, const auto& p) { b.emplace_back(n, B::copy_to_host(ctx, p.value)); });
  BOOST_TEST((a == b), what << ": parameters differ (" << a.size() << " vs " << b.size() << ")");
  ctx.random_offset = 0;
  const auto la = B::copy_to_host(ctx, big.forward(ctx, test::tiny_batch()));
  ctx.random_offset = 0;
  const auto lb = B::copy_to_host(ctx, small.forward(ctx, test::tiny_batch()));
  BOOST_TEST((la == lb), what << ": outputs differ");
}

BOOST_AUTO_TEST_CASE(switched_off_methods_cost_nothing_and_change_nothing) {
  const lora_config lora{.r = 2, .alpha = 4, .dropout = 0.2};
  const adapter_config houlsby{.bottleneck = 3, .nonlinearity = activation::gelu};
  adapter_config pfeiffer = houlsby;
  pfeiffer.target_modules = R"(.*\.layer\.\d+\.output\.dense)";
  auto off = [](auto c) {
    c.enabled = false;
    return c;
  };
  using all_roles = methods::lora<roles::query, roles::key, roles::value, roles::attention_output, roles::ffn_in, roles::ffn_out>;
  same_as_compiled<plan<methods::bitfit>>({off(lora), bitfit_config{}, off(houlsby)}, "bitfit");
  same_as_compiled<plan<methods::pfeiffer_adapter>>({off(lora), off(bitfit_config{}), pfeiffer}, "pfeiffer");
  same_as_compiled<plan<all_roles, methods::houlsby_adapter>>({lora, off(bitfit_config{}), houlsby}, "lora+houlsby");
  same_as_compiled<plan<all_roles, methods::bitfit, methods::houlsby_adapter>>({lora, bitfit_config{}, houlsby}, "all");
}

BOOST_AUTO_TEST_SUITE_END()
