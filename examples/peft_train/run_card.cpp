// peft-train: the run card (peft_train.json) and the option spellings it records. Kept apart from
// options.cpp, which instantiates the adapter readers for a plan, so that the run-card fuzzer
// (tests/fuzz/fuzz_run_card.cpp) builds from this file alone.
#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include <peft/io/atomic_file.hpp>

#include "options.hpp"

namespace peft_train {

std::vector<std::string> split_nonempty(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep))
    if (!cur.empty()) out.push_back(cur);
  return out;
}


peft::activation activation_named(const std::string& name) {
  if (const auto a = peft::activation_from_name(name)) return *a;
  throw peft::config_error("activation '" + name + "' is not one of " + peft::supported_activation_names);
}

std::string canonical_method(const std::string& method) {
  const std::string choices =
      "full, or any of lora, adalora, vera, bitfit, ia3, ln_tuning, houlsby (or adapter), pfeiffer, prompt_tuning (or prompt), "
      "prefix_tuning (or prefix) joined by '+' (e.g. lora+bitfit, ia3+pfeiffer)";
  std::set<std::string> parts;
  for (auto p : split_nonempty(method, '+')) {
    if (p == "adapter") p = "houlsby";
    if (p == "prompt") p = "prompt_tuning";
    if (p == "prefix") p = "prefix_tuning";
    if (std::find(method_components.begin(), method_components.end(), p) == method_components.end())
      throw peft::config_error("method '" + method + "': '" + p + "' is not a method; use " + choices);
    if (!parts.insert(p).second) throw peft::config_error("method '" + method + "' names '" + p + "' twice");
  }
  if (parts.empty()) throw peft::config_error("method '" + method + "' names no method; use " + choices);
  if (parts.count("full") && parts.size() > 1)
    throw peft::config_error("method '" + method + "': full fine-tuning trains every weight and combines with nothing");
  if (parts.count("lora") && parts.count("adalora"))
    throw peft::config_error("method '" + method + "': lora and adalora would both put lora_A / lora_B on the same modules; pick one");
  if (parts.count("prompt_tuning") && parts.count("prefix_tuning"))
    throw peft::config_error("method '" + method + "': prompt_tuning and prefix_tuning both add virtual tokens; pick one");
  if (parts.count("houlsby") && parts.count("pfeiffer"))
    throw peft::config_error("method '" + method + "': houlsby and pfeiffer are two placements of one adapter; pick one");
  std::string canonical;
  for (auto c : method_components)
    if (parts.count(std::string(c))) canonical += (canonical.empty() ? "" : "+") + std::string(c);
  return canonical;
}

bool has_component(const std::string& method, std::string_view component) {
  const auto parts = split_nonempty(method, '+');
  return std::find(parts.begin(), parts.end(), component) != parts.end();
}

std::string role_target_regex(const std::string& roles, const std::string& option) {
  // Module names of BertModel per role; PEFT full-matches the expression against each module name.
  static const std::map<std::string, std::string> module_of = {
      {"query", R"(attention\.self\.query)"},      {"key", R"(attention\.self\.key)"},
      {"value", R"(attention\.self\.value)"},      {"attention_output", R"(attention\.output\.dense)"},
      {"ffn_in", R"(intermediate\.dense)"},        {"ffn_out", R"(layer\.\d+\.output\.dense)"},
      {"pooler", R"(pooler\.dense)"}};
  std::vector<std::string> names = roles == "all" ? std::vector<std::string>{"query", "key", "value", "attention_output", "ffn_in", "ffn_out"}
                                                  : split_nonempty(roles, ',');
  if (names.empty()) throw peft::config_error(option + ": name at least one role");
  std::string alternatives;
  for (const auto& n : names) {
    const auto it = module_of.find(n);
    if (it == module_of.end())
      throw peft::config_error(option + ": role '" + n +
                               "' is not one of query, key, value, attention_output, ffn_in, ffn_out, pooler, all");
    alternatives += (alternatives.empty() ? "" : "|") + it->second;
  }
  return ".*\\.(" + alternatives + ")";
}

std::string run_card::describe() const {
  const run_card& c = *this;
  std::ostringstream os;
  os << c.method;
  if (has_component(c.method, "lora"))
    os << " (r=" << c.methods.get<peft::lora_config>().r << ", alpha=" << c.methods.get<peft::lora_config>().alpha << ", dropout=" << c.methods.get<peft::lora_config>().dropout
       << ", targets " << c.lora_targets << (c.methods.get<peft::lora_config>().use_rslora ? ", rsLoRA" : "")
       << (c.methods.get<peft::lora_config>().use_dora ? ", DoRA" : "") << ")";
  if (has_component(c.method, "adalora")) {
    const auto& a = c.methods.get<peft::adalora_config>();
    os << " (init_r=" << a.init_r << ", target_r=" << a.target_r << ", alpha=" << a.alpha << ", tinit=" << a.tinit
       << ", tfinal=" << a.tfinal << ", deltaT=" << a.delta_t << ", orth_reg_weight=" << a.orth_reg_weight << ", targets "
       << c.adalora_targets << ")";
  }
  if (has_component(c.method, "vera")) {
    const auto& v = c.methods.get<peft::vera_config>();
    os << " (r=" << v.r << ", d_initial=" << v.d_initial << ", dropout=" << v.dropout << ", projection_prng_key="
       << v.projection_prng_key << ", targets " << c.vera_targets << ")";
  }
  if (has_component(c.method, "ia3")) os << " (targets " << c.ia3_targets << ")";
  if (has_component(c.method, "ln_tuning")) {
    const auto& t = c.methods.get<peft::ln_tuning_config>().target_modules;
    os << " (norms " << (t.empty() ? std::string("all") : t) << ")";
  }
  if (has_component(c.method, "prompt_tuning")) {
    const auto& p = c.methods.get<peft::prompt_tuning_config>();
    os << " (" << p.num_virtual_tokens << " virtual tokens, "
       << (p.init == peft::prompt_init::text ? "from the text '" + p.init_text + "'"
           : p.init == peft::prompt_init::sample_vocab ? std::string("from random vocabulary entries") : std::string("random start"))
       << ")";
  }
  if (has_component(c.method, "prefix_tuning")) {
    const auto& p = c.methods.get<peft::prefix_tuning_config>();
    os << " (" << p.num_virtual_tokens << " virtual tokens"
       << (p.prefix_projection ? ", reparametrised through an MLP" + (p.encoder_hidden_size ? " of " + std::to_string(p.encoder_hidden_size) : std::string()) : std::string())
       << ")";
  }
  if (has_component(c.method, "houlsby") || has_component(c.method, "pfeiffer"))
    os << " (bottleneck " << (c.methods.get<peft::adapter_config>().bottleneck ? std::to_string(c.methods.get<peft::adapter_config>().bottleneck)
                                                            : "hidden/" + std::to_string(int(c.methods.get<peft::adapter_config>().reduction_factor)))
       << ", " << peft::to_string(c.methods.get<peft::adapter_config>().nonlinearity) << ")";
  return os.str();
}
nlohmann::json run_card::to_json() const {
  const auto& l = methods.get<peft::lora_config>();
  const auto& a = methods.get<peft::adapter_config>();
  const auto& i = methods.get<peft::ia3_config>();
  const auto& v = methods.get<peft::vera_config>();
  const auto& ad = methods.get<peft::adalora_config>();
  const auto& pt = methods.get<peft::prompt_tuning_config>();
  const auto& pf = methods.get<peft::prefix_tuning_config>();
  nlohmann::json pattern = nlohmann::json::object();
  for (const auto& [module, kept] : ad.rank_pattern) pattern[module] = kept;
  return {{"format", "peft-train run card 1"},
          {"method", method},
          {"task", task},
          {"labels", labels},
          {"pooling", pooling},
          {"max_length", max_length},
          {"truncate", truncate},
          {"lora", {{"r", l.r}, {"alpha", l.alpha}, {"dropout", l.dropout}, {"use_rslora", l.use_rslora},
                    {"use_dora", l.use_dora}, {"targets", lora_targets}, {"target_modules", l.target_modules}}},
          {"adapter", {{"bottleneck", a.bottleneck}, {"reduction_factor", a.reduction_factor},
                       {"nonlinearity", std::string(peft::to_string(a.nonlinearity))}}},
          {"ia3", {{"targets", ia3_targets}, {"target_modules", i.target_modules},
                   {"feedforward_modules", i.feedforward_modules ? nlohmann::json(*i.feedforward_modules) : nlohmann::json(nullptr)},
                   {"init_ia3_weights", i.init_ia3_weights}}},
          {"ln_tuning", {{"target_modules", methods.get<peft::ln_tuning_config>().target_modules}}},
          {"adalora", {{"init_r", ad.init_r}, {"target_r", ad.target_r}, {"alpha", ad.alpha}, {"dropout", ad.dropout},
                       {"tinit", ad.tinit}, {"tfinal", ad.tfinal}, {"delta_t", ad.delta_t}, {"beta1", ad.beta1}, {"beta2", ad.beta2},
                       {"orth_reg_weight", ad.orth_reg_weight}, {"total_step", ad.total_step}, {"targets", adalora_targets},
                       {"target_modules", ad.target_modules}, {"rank_pattern", pattern}}},
          {"vera", {{"r", v.r}, {"d_initial", v.d_initial}, {"dropout", v.dropout}, {"projection_prng_key", v.projection_prng_key},
                    {"targets", vera_targets}, {"target_modules", v.target_modules}}},
          {"prompt_tuning", {{"num_virtual_tokens", pt.num_virtual_tokens},
                             {"init", pt.init == peft::prompt_init::text ? "text" : pt.init == peft::prompt_init::sample_vocab ? "sample_vocab" : "random"},
                             {"init_text", pt.init_text}, {"init_token_ids", pt.init_token_ids}}},
          {"prefix_tuning", {{"num_virtual_tokens", pf.num_virtual_tokens}, {"prefix_projection", pf.prefix_projection},
                             {"encoder_hidden_size", pf.encoder_hidden_size}, {"init_zero", pf.init_zero}}},
          {"base_model", base_model}};
}

run_card run_card::from_json(const nlohmann::json& j, const std::string& source) {
  run_card c;
  try {
    c.method = canonical_method(j.at("method").get<std::string>());
    c.task = j.at("task").get<std::string>();
    if (c.task != "sequence" && c.task != "token") throw peft::config_error("task '" + c.task + "' is not sequence or token");
    c.labels = j.at("labels").get<std::vector<std::string>>();
    if (c.labels.size() < 2) throw peft::config_error("fewer than two labels");
    c.pooling = j.at("pooling").get<std::string>();
    c.max_length = j.at("max_length").get<std::size_t>();
    c.truncate = j.at("truncate").get<bool>();
    const auto& l = j.at("lora");
    c.methods.get<peft::lora_config>().r = l.at("r").get<std::size_t>();
    c.methods.get<peft::lora_config>().alpha = l.at("alpha").get<double>();
    c.methods.get<peft::lora_config>().dropout = l.at("dropout").get<double>();
    c.methods.get<peft::lora_config>().use_rslora = l.at("use_rslora").get<bool>();
    if (l.contains("use_dora")) c.methods.get<peft::lora_config>().use_dora = l.at("use_dora").get<bool>();  // older cards: none
    c.lora_targets = l.at("targets").get<std::string>();
    c.methods.get<peft::lora_config>().target_modules = l.at("target_modules").get<std::string>();
    const auto& a = j.at("adapter");
    c.methods.get<peft::adapter_config>().bottleneck = a.at("bottleneck").get<std::size_t>();
    c.methods.get<peft::adapter_config>().reduction_factor = a.at("reduction_factor").get<double>();
    c.methods.get<peft::adapter_config>().nonlinearity = activation_named(a.at("nonlinearity").get<std::string>());
    if (j.contains("ia3")) {  // cards written before (IA)3 have no section
      const auto& i = j.at("ia3");
      auto& ic = c.methods.get<peft::ia3_config>();
      c.ia3_targets = i.at("targets").get<std::string>();
      ic.target_modules = i.at("target_modules").get<std::string>();
      if (!i.at("feedforward_modules").is_null()) ic.feedforward_modules = i.at("feedforward_modules").get<std::string>();
      ic.init_ia3_weights = i.at("init_ia3_weights").get<bool>();
    }
    if (j.contains("ln_tuning"))  // cards written before LayerNorm tuning have no section
      c.methods.get<peft::ln_tuning_config>().target_modules = j.at("ln_tuning").at("target_modules").get<std::string>();
    if (j.contains("adalora")) {  // cards written before AdaLoRA have no section
      const auto& a = j.at("adalora");
      auto& ac = c.methods.get<peft::adalora_config>();
      ac.init_r = a.at("init_r").get<std::size_t>();
      ac.target_r = a.at("target_r").get<std::size_t>();
      ac.alpha = a.at("alpha").get<double>();
      ac.dropout = a.at("dropout").get<double>();
      ac.tinit = a.at("tinit").get<std::size_t>();
      ac.tfinal = a.at("tfinal").get<std::size_t>();
      ac.delta_t = a.at("delta_t").get<std::size_t>();
      ac.beta1 = a.at("beta1").get<double>();
      ac.beta2 = a.at("beta2").get<double>();
      ac.orth_reg_weight = a.at("orth_reg_weight").get<double>();
      ac.total_step = a.at("total_step").get<std::size_t>();
      c.adalora_targets = a.at("targets").get<std::string>();
      ac.target_modules = a.at("target_modules").get<std::string>();
      ac.rank_pattern = a.at("rank_pattern").get<std::map<std::string, std::vector<bool>>>();
    }
    if (j.contains("vera")) {  // cards written before VeRA have no section
      const auto& v = j.at("vera");
      auto& vc = c.methods.get<peft::vera_config>();
      vc.r = v.at("r").get<std::size_t>();
      vc.d_initial = v.at("d_initial").get<double>();
      vc.dropout = v.at("dropout").get<double>();
      vc.projection_prng_key = v.at("projection_prng_key").get<std::uint64_t>();
      c.vera_targets = v.at("targets").get<std::string>();
      vc.target_modules = v.at("target_modules").get<std::string>();
    }
    // A card is read to rebuild a trained model: the adapter then supplies the table, so the prompt's
    // start is not redone and a reparametrised prefix is built as the table its file holds.
    if (j.contains("prompt_tuning")) {  // cards written before prompt tuning have no section
      auto& pc = c.methods.get<peft::prompt_tuning_config>();
      pc.num_virtual_tokens = j.at("prompt_tuning").at("num_virtual_tokens").get<std::size_t>();
      pc.init_text = j.at("prompt_tuning").at("init_text").get<std::string>();
    }
    if (j.contains("prefix_tuning")) {
      const auto& p = j.at("prefix_tuning");
      auto& pc = c.methods.get<peft::prefix_tuning_config>();
      pc.num_virtual_tokens = p.at("num_virtual_tokens").get<std::size_t>();
      pc.prefix_projection = p.at("prefix_projection").get<bool>();
      pc.encoder_hidden_size = p.at("encoder_hidden_size").get<std::size_t>();
      pc.init_zero = p.at("init_zero").get<bool>();
      pc.inference_mode = true;
    }
    c.base_model = j.value("base_model", "");
  } catch (const nlohmann::json::exception& e) {
    throw peft::io::io_error(source + ": malformed run card: " + e.what());
  } catch (const peft::error& e) {
    throw peft::io::io_error(source + ": " + e.what());
  }
  return c;
}

run_card run_card::read(const fs::path& dir) {
  const auto path = dir / "peft_train.json";
  std::ifstream in(path);
  if (!in)
    throw peft::io::io_error("'" + dir.string() + "' has no peft_train.json: pass an adapter or model directory written by peft-train");
  try {
    return from_json(nlohmann::json::parse(in), path.string());
  } catch (const nlohmann::json::parse_error& e) {
    throw peft::io::io_error(path.string() + ": not valid JSON: " + e.what());
  }
}

void run_card::write(const fs::path& dir) const { peft::io::write_text_atomically(dir / "peft_train.json", to_json().dump(2) + "\n"); }

}  // namespace peft_train
