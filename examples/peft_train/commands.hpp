#pragma once
// peft-train: the subcommands' definitions, instantiated once per plan by plans/plan_<i>.cpp.

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <optional>
#include <set>
#include <sstream>

#include <peft/train/callbacks.hpp>
#include <peft/train/trainer.hpp>

#include "plot.hpp"
#include "session.hpp"

namespace peft_train {

namespace detail {
/// 64-bit FNV-1a of a file's bytes ("" for no file), for comparing the data the processes read.
inline std::string content_hash(const fs::path& p) {
  if (p.empty()) return "";
  std::ifstream in(p, std::ios::binary);
  std::uint64_t h = 1469598103934665603ull;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    for (std::streamsize i = 0; i < in.gcount(); ++i) h = (h ^ std::uint64_t(static_cast<unsigned char>(buf[i]))) * 1099511628211ull;
    if (!in) break;
  }
  std::ostringstream s;
  s << std::hex << h;
  return s.str();
}
/// Data parallel: every process must run the same options on the same data. What must agree (the
/// run's identity, with each file's content in place of its path, which may differ between hosts)
/// is compared with process 0's; a difference is an error on every process, naming the first that
/// differs.
inline void require_same_run(const train_options& o) {
  if (process_group::size() == 1) return;
  nlohmann::json id = o.identity();
  id["model_dir"] = content_hash(o.model_dir / "config.json") + content_hash(o.model_dir / "model.safetensors");
  id["train_file"] = content_hash(o.train_file);
  id["dev_file"] = content_hash(o.dev_file);
  const std::string mine = id.dump();
  std::string first = mine;
  process_group::broadcast(first, 0);
  double differs = first == mine ? 0.0 : double(process_group::rank());
  process_group::max(std::span<double>(&differs, 1));
  if (differs > 0)
    throw peft::config_error(peft::detail::concat("process ", std::size_t(differs),
                                                  " was started with other options, model or data than process 0; every "
                                                  "process of a data-parallel run must get the same command and files"));
}
inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
inline std::string metric_name(const std::string& task) { return task == "token" ? "entity F1" : "accuracy"; }
inline nlohmann::json eval_record(const eval_result& r, const std::string& task) {
  nlohmann::json j = {{"loss", r.loss}};
  if (task == "token")
    j.update({{"f1", r.ent.f1}, {"precision", r.ent.precision}, {"recall", r.ent.recall}, {"predicted_entities", r.ent.predicted},
              {"gold_entities", r.ent.gold}, {"correct_entities", r.ent.correct}});
  else
    j["accuracy"] = r.accuracy;
  return j;
}
/// Where the trained weights go: an adapter in PEFT's layout, or a full model for full fine-tuning.
inline fs::path weights_dir(const train_options& o) {
  return o.output_dir / (o.card.method == "full" ? "model" : "adapter");
}
}  // namespace detail

template <class Plan>
int commands<Plan>::train(const train_options& o) {
  if (o.epochs == 0 || o.batch_size == 0 || o.eval_batch_size == 0 || o.gradient_accumulation == 0)
    throw peft::config_error("--epochs, --batch-size, --eval-batch-size and --gradient-accumulation must be positive");
  if (!(o.lr > 0) || !(o.weight_decay >= 0) || !(o.warmup_ratio >= 0 && o.warmup_ratio < 1) || !(o.clip >= 0))
    throw peft::config_error("need --lr > 0, --weight-decay >= 0, 0 <= --warmup < 1, --clip >= 0 (0 disables clipping)");

  // 1. Everything is read and checked before anything is written.
  const model_dir md = open_model_dir(o.model_dir);
  run_card card = o.card;
  card.base_model = fs::absolute(o.model_dir).lexically_normal().string();
  // Prompt and prefix tuning's virtual tokens take positions before the text's.
  const std::size_t virt = virtual_tokens(card), positions = md.config.max_position_embeddings;
  if (virt >= positions)
    throw peft::config_error(peft::detail::concat("--virtual-tokens ", virt, " leaves no room in the model's ", positions,
                                                  " positions (max_position_embeddings in ", (o.model_dir / "config.json").string(), ")"));
  if (card.max_length == 0) card.max_length = positions - virt;
  if (card.max_length + virt > positions)
    throw peft::config_error(peft::detail::concat("--max-length ", card.max_length, virt ? " with " + std::to_string(virt) + " virtual tokens" : "",
                                                  " exceeds the model's ", positions, " positions (max_position_embeddings in ",
                                                  (o.model_dir / "config.json").string(), ")"));
  if (auto& p = card.methods.get<peft::prompt_tuning_config>(); has_component(card.method, "prompt_tuning")) {
    p.tokenizer_name_or_path = card.base_model;
    if (p.init == peft::prompt_init::text) {  // as PEFT: the text's ids with the special tokens, repeated or cut
      if (p.init_text.empty()) throw peft::config_error("--prompt-init text needs --prompt-init-text");
      p.init_token_ids = md.tokenizer.encode(p.init_text, std::nullopt, {.max_length = 0}).ids;
    }
  }
  if (card.methods.get<peft::lora_config>().use_dora && !has_component(card.method, "lora"))
    throw peft::config_error("--dora is a form of LoRA: use it with --method lora (or a combination with lora)");
  if (o.early_stopping && o.dev_file.empty())
    throw peft::config_error("--early-stopping follows the dev score: pass --dev (or drop --early-stopping)");
  const dataset train_set = read_dataset(o.train_file, card.task, o.format);
  std::optional<dataset> dev_set;
  if (!o.dev_file.empty()) dev_set = read_dataset(o.dev_file, card.task, o.format);
  detail::require_same_run(o);
  const bool root = process_group::rank() == 0;  // data parallel: the one process that writes
  card.labels = labels_of(train_set);
  if (card.labels.size() < 2)
    throw peft::data::data_error("'" + o.train_file.string() + "' has only one label ('" + card.labels.front() + "'); need two or more");
  const peft::data::batch_options train_batching{.batch_size = o.batch_size, .max_length = card.max_length,
                                                 .truncate = card.truncate, .shuffle = true, .seed = o.seed};
  peft::data::batch_stats train_stats, dev_stats;
  auto epoch_batches = [&](std::size_t epoch, peft::data::batch_stats* stats = nullptr) {
    auto bo = train_batching;
    bo.seed = peft::derive_seed(o.seed, 1000 + epoch);
    return make_batches(md.tokenizer, train_set, card, bo, stats);
  };
  // Epoch 0's batches, made now so that every example is checked before anything is written.
  auto first_epoch = epoch_batches(0, &train_stats);
  const std::size_t steps_per_epoch = first_epoch.size();  // batches; optimizer steps with accumulation:
  const std::size_t updates_per_epoch = (steps_per_epoch + o.gradient_accumulation - 1) / o.gradient_accumulation;
  std::vector<peft::data::labeled_batch> dev_batches;
  if (dev_set) {  // label errors name the dev file and line: the label sets must agree
    dev_batches = make_batches(md.tokenizer, *dev_set, card,
                               {.batch_size = o.eval_batch_size, .max_length = card.max_length, .truncate = card.truncate},
                               &dev_stats);
    const auto dev_labels = labels_of(*dev_set);
    for (const auto& l : card.labels)
      if (std::find(dev_labels.begin(), dev_labels.end(), l) == dev_labels.end())
        std::cerr << "note: label '" << l << "' of the training file does not occur in " << o.dev_file.string() << "\n";
  }
  const std::size_t total_steps =
      o.max_steps ? std::min(o.max_steps, o.epochs * updates_per_epoch) : o.epochs * updates_per_epoch;

  // The output directory: locked while this run owns it; the run works in run.partial/ and its
  // results replace the previous ones only once they are complete.
  refuse_output_over_input(o.output_dir, o.model_dir, "--model");
  // Only process 0 owns (locks, writes) the output directory; the others read its checkpoint to resume.
  std::optional<output_directory> out;
  if (root) out.emplace(o.output_dir);
  const fs::path partial = o.output_dir / "run.partial";
  const fs::path checkpoint = partial / "checkpoint.safetensors";
  const fs::path weights = detail::weights_dir(o);
  if (root) {
    if (o.resume && !fs::exists(checkpoint))
      throw peft::io::io_error("--resume: '" + checkpoint.string() + "' does not exist (nothing to resume)");
    if (!o.resume && !o.overwrite) {
      if (fs::exists(checkpoint))
        throw peft::io::io_error("'" + o.output_dir.string() +
                                 "' holds an unfinished run (run.partial/); pass --resume to continue it or --overwrite to start again");
      if (fs::exists(weights) || fs::exists(o.output_dir / "metrics.jsonl") || fs::exists(o.output_dir / "checkpoint.safetensors"))
        throw peft::io::io_error("'" + o.output_dir.string() +
                                 "' already holds a run; pass --overwrite to replace it once the new run has finished (or "
                                 "choose another directory)");
    }
    if (!o.resume) out->discard_partial();  // an unfinished run's state; the finished results stay until replaced
  }
  {  // the others go on once process 0 has checked and prepared the directory (an error there ends all)
    std::string ready = "ready";
    process_group::broadcast(ready, 0);
  }
  if (!root && o.resume && !fs::exists(checkpoint))
    throw peft::io::io_error("--resume: process " + std::to_string(process_group::rank()) + " cannot read '" + checkpoint.string() +
                             "' (every host needs the output directory, on a shared file system)");

  // AdaLoRA's schedule runs over this run's optimizer steps (PEFT's total_step, which its files carry).
  if (has_component(card.method, "adalora")) card.methods.get<peft::adalora_config>().total_step = total_steps;

  // 2. The model: base weights, then the plan's method parameters on top.
  session<Plan> s(md, card, o.seed, o.threads);
  s.load_base(md.weights, false, true);
  s.store_frozen(o.frozen_weights, true);
  const auto counts = s.with_model([](auto& m) { return peft::count_parameters(m); });
  std::cerr << "method: " << card.describe() << "\n"
            << s.with_model([](auto& m) { return peft::trainable_parameters_report(m); }) << "\n"
            << "train: " << train_set.size() << " examples, " << train_stats.tokens << " tokens, " << steps_per_epoch
            << " steps/epoch";
  if (train_stats.truncated) std::cerr << ", " << train_stats.truncated << " truncated to " << card.max_length << " tokens";
  if (dev_set) std::cerr << "; dev: " << dev_set->size() << " examples";
  std::cerr << "\n";

  auto& ctx = s.ctx();
  const auto warmup = std::int64_t(std::llround(o.warmup_ratio * double(total_steps)));
  const auto schedule = peft::optim::named_schedule::from_name(o.schedule, warmup, std::int64_t(total_steps));
  return s.with_model([&](auto& m) -> int {
    peft::optim::optimizer opt(m, peft::optim::adamw{.lr = o.lr, .weight_decay = o.weight_decay}, schedule);
    // No weight decay on biases, norms and bias deltas (as transformers' Trainer), nor on (IA)3's
    // vectors, DoRA's magnitudes and VeRA's vectors: decay would pull them to 0, away from the
    // identity they start at (VeRA: toward switching its update off).
    opt.template set_group_options<peft::groups::bias>({.weight_decay = 0.0});
    opt.template set_group_options<peft::groups::norm>({.weight_decay = 0.0});
    opt.template set_group_options<peft::groups::bias_delta>({.weight_decay = 0.0});
    opt.template set_group_options<peft::groups::ia3>({.weight_decay = 0.0});
    opt.template set_group_options<peft::groups::lora_magnitude>({.weight_decay = 0.0});
    opt.template set_group_options<peft::groups::vera_lambda>({.weight_decay = 0.0});
    opt.template set_group_options<peft::groups::ln_tuning>({.weight_decay = 0.0});  // norms, as above

    // 3. The loop: the library's trainer, with the tool's progress, logs and interruption.
    peft::train::classification_task<std::remove_reference_t<decltype(m)>> task(m);
    using batch_t = peft::data::labeled_batch;
    peft::train::trainer<decltype(task), decltype(opt), batch_t, process_group> loop(
        ctx, task, opt,
        {.epochs = o.epochs, .max_steps = o.max_steps, .gradient_accumulation = o.gradient_accumulation,
         .clip_grad_norm = o.clip, .log_every = o.log_every, .evaluate_every_epoch = true,
         .early_stopping_patience = o.early_stopping, .checkpoint = checkpoint, .save_every_steps = o.save_every,
         .identity = o.identity()});
    if (process_group::size() > 1)
      std::cerr << "data parallel: " << process_group::size() << " processes, each on its rows of every batch of "
                << o.batch_size << "; gradients of " << peft::detail::thousands(counts.trainable) << " parameters summed per step\n";
    // AdaLoRA: the orthogonal regulariser's gradient before each update, the rank allocation after it.
    using model_t = std::remove_reference_t<decltype(m)>;
    std::optional<peft::methods::adalora_allocator<model_t>> allocator;
    if (has_component(card.method, "adalora")) {
      allocator.emplace(m, run_time_methods(card).template get<peft::adalora_config>());
      loop.set_step_hooks([&](auto& c, std::size_t) { allocator->regularize(c); },
                          [&](auto& c, std::size_t at) { allocator->update_and_allocate(c, at); });
    }
    if (o.resume) {
      loop.resume();
      std::cerr << "resuming from " << checkpoint.string() << ": epoch " << loop.state().epoch + 1 << ", step "
                << loop.state().step << "\n";
    }
    if (root) out->create_partial();
    if (dev_set)
      loop.set_evaluator([&](const peft::train::train_state& st) {
        const auto r = s.evaluate(dev_batches, *dev_set, md.tokenizer);
        std::cerr << "epoch " << st.epoch + 1 << ": dev loss " << std::fixed << std::setprecision(4) << r.loss << ", "
                  << detail::metric_name(card.task) << " " << r.score(card.task) << std::defaultfloat << "\n";
        return peft::train::evaluation{r.score(card.task), detail::eval_record(r, card.task)};
      });
    peft::train::progress_callback progress(o.epochs);
    std::optional<metrics_log> metrics;  // process 0's
    if (root) metrics.emplace(partial / "metrics.jsonl");
    std::optional<peft::train::tensorboard_callback> board;
    if (!o.tensorboard_dir.empty() && root) board.emplace(o.tensorboard_dir);
    struct interrupt_at : peft::train::callback {  // testing aid: behave as if Ctrl-C came after step n
      std::size_t n;
      explicit interrupt_at(std::size_t n) : n(n) {}
      void on_step_end(const peft::train::train_state& st, const peft::train::step_record&, peft::train::train_control&) override {
        if (n && st.step == n) std::raise(SIGINT);
      }
    } interrupt_test(o.interrupt_after);
    struct crash_at : peft::train::callback {  // testing aid: the last process dies as a crashed one would
      std::size_t n;
      explicit crash_at(std::size_t n) : n(n) {}
      void on_step_end(const peft::train::train_state& st, const peft::train::step_record&, peft::train::train_control&) override {
        if (n && st.step == n && process_group::size() > 1 && process_group::rank() + 1 == process_group::size()) std::_Exit(3);
      }
    } crash_test(o.crash_after);
    loop.add_callback(crash_test);
    peft::train::interrupt_callback on_interrupt(interrupted);
    for (peft::train::callback* c : std::initializer_list<peft::train::callback*>{&progress, &interrupt_test, &on_interrupt})
      loop.add_callback(*c);
    if (metrics) loop.add_callback(*metrics);
    if (board) loop.add_callback(*board);
    install_interrupt_handlers();
    const auto finished_as = loop.fit([&](std::size_t epoch) { return epoch == 0 ? std::move(first_epoch) : epoch_batches(epoch); });
    if (finished_as == peft::train::stop_reason::interrupted) {
      std::cerr << "\ninterrupted at step " << loop.state().step << "; the checkpoint " << checkpoint.string()
                << " is saved: rerun the same command with --resume to continue\n";
      return 130;
    }
    if (finished_as == peft::train::stop_reason::early_stopped)
      std::cerr << "early stopping: no improvement in " << o.early_stopping << " evaluations\n";
    if (!root) return 0;  // the results are process 0's to write
    const std::size_t step = loop.state().step;
    const double best_score = loop.state().best_score;
    const nlohmann::json last_eval = loop.state().last_eval;
    const double train_seconds = loop.elapsed();

    // 4. The result: adapter (or model), run card, summary, plot, written in run.partial/ and then
    // moved over the previous ones; then the checkpoint goes.
    if (allocator) card.methods.get<peft::adalora_config>().rank_pattern = allocator->rank_pattern(ctx);
    const fs::path staged = partial / weights.filename();
    fs::remove_all(staged);  // a result half-written by a run killed while writing it
    if (card.method == "full") {
      fs::create_directories(staged);
      peft::io::save_checkpoint(ctx, m, staged / "model.safetensors");
      peft::io::write_json_file(
          staged / "config.json",
          md.config.to_json(card.task == "token" ? "BertForTokenClassification" : "BertForSequenceClassification", card.labels));
      copy_tokenizer_files(o.model_dir, staged);
    } else {
      peft::io::save_peft_adapter(ctx, m, staged,
                                  {.base_model_name_or_path = card.base_model,
                                   .task_type = card.task == "token" ? "TOKEN_CLS" : "SEQ_CLS",
                                   .methods = run_time_methods(card)});
    }
    card.write(staged);
    const nlohmann::json summary = {
        {"method", card.method},
        {"description", card.describe()},
        {"task", card.task},
        {"trainable_params", counts.trainable},
        {"total_params", counts.total},
        {"trainable_percent", 100.0 * double(counts.trainable) / double(counts.total)},
        {"metric", card.task == "token" ? "f1" : "accuracy"},
        {"dev", last_eval},
        {"best_dev_score", best_score},
        {"steps", step},
        {"epochs", o.epochs},
        {"train_seconds", train_seconds},
        {"train_tokens_per_s", double(train_stats.tokens) * double(step) / double(updates_per_epoch) / train_seconds},
        {"peak_rss_mb", peak_rss_mb()},
        {"weights_dir", weights.string()},
        {"weights_bytes", size_on_disk(staged)},
        {"threads", Eigen::nbThreads()}};
    peft::io::write_text_atomically(partial / "summary.json", summary.dump(2) + "\n");
    if (o.plot) draw_plot(partial, detail::metric_name(card.task));
    out->commit({weights.filename().string(), "metrics.jsonl", "training.svg", "summary.json"});
    fs::remove(o.output_dir / "checkpoint.safetensors");  // where earlier versions kept an unfinished run's

    std::printf("\n== peft-train summary\n");
    std::printf("%-18s %s\n", "method", card.describe().c_str());
    std::printf("%-18s %s of %s (%.4f%%)\n", "trainable params", peft::detail::thousands(counts.trainable).c_str(),
                peft::detail::thousands(counts.total).c_str(), 100.0 * double(counts.trainable) / double(counts.total));
    if (!last_eval.is_null())
      std::printf("%-18s %.4f (after epoch %zu)\n", ("dev " + detail::metric_name(card.task)).c_str(),
                  last_eval.value(card.task == "token" ? "f1" : "accuracy", 0.0), std::size_t(last_eval.value("epoch", 0)));
    std::printf("%-18s %s for %zu steps (%.0f tokens/s, %d threads)\n", "train time",
                peft::train::progress_bar::clock_str(train_seconds).c_str(), step, summary["train_tokens_per_s"].get<double>(),
                Eigen::nbThreads());
    std::printf("%-18s %.0f MB\n", "peak memory", peak_rss_mb());
    std::printf("%-18s %s (%.1f KB)\n", card.method == "full" ? "model" : "adapter", weights.string().c_str(),
                double(size_on_disk(weights)) / 1024.0);
    std::printf("%-18s %s\n", "metrics", (o.output_dir / "metrics.jsonl").string().c_str());
    return 0;
  });
}

/// Builds the model of `card` on `base` and loads the adapter (or, for "full", the model itself).
template <class Plan>
void load_for_inference(session<Plan>& s, const model_dir& md, const fs::path& adapter_dir,
                        const std::string& frozen_weights = "f32") {
  if (adapter_dir.empty()) {
    s.load_base(md.weights, true, false);
  } else {
    s.load_base(md.weights, false, false);
    s.with_model([&](auto& m) { peft::io::load_peft_adapter(s.ctx(), m, adapter_dir); });
  }
  s.store_frozen(frozen_weights, false);
}

template <class Plan>
int commands<Plan>::eval(const eval_options& o, const run_card& card) {
  const model_dir md = open_model_dir(o.model_dir);
  if (card.max_length + virtual_tokens(card) > md.config.max_position_embeddings)
    throw peft::config_error(peft::detail::concat("the run card's max_length ", card.max_length, " and ", virtual_tokens(card),
                                                  " virtual tokens exceed the model's ", md.config.max_position_embeddings, " positions"));
  if (!o.predictions_file.empty() && fs::exists(o.predictions_file) && fs::equivalent(o.predictions_file, o.data_file))
    throw peft::config_error("--predictions '" + o.predictions_file.string() + "' is the --data file; write them elsewhere");
  const dataset d = read_dataset(o.data_file, card.task, o.format);
  peft::data::batch_stats stats;
  const auto batches = make_batches(md.tokenizer, d, card, {.batch_size = o.batch_size, .max_length = card.max_length,
                                                            .truncate = card.truncate}, &stats);
  session<Plan> s(md, card, 0, o.threads);
  load_for_inference(s, md, o.adapter_dir, o.frozen_weights);
  const auto start = std::chrono::steady_clock::now();
  const auto r = s.evaluate(batches, d, md.tokenizer);
  const double secs = detail::seconds_since(start);
  if (!o.predictions_file.empty()) {
    std::ostringstream out;
    for (std::size_t i = 0; i < d.size(); ++i) {
      if (card.task == "token") {
        for (std::size_t w = 0; w < d.sentences[i].tokens.size(); ++w)
          out << d.sentences[i].tokens[w] << '\t' << d.sentences[i].tags[w] << '\t' << r.predicted[i][w] << '\n';
        out << '\n';
      } else {
        out << r.predicted[i][0] << '\t' << r.confidence[i][0] << '\t' << d.texts[i].label << '\t' << d.texts[i].text << '\n';
      }
    }
    peft::io::write_text_atomically(o.predictions_file, out.str());
  }
  nlohmann::json j = detail::eval_record(r, card.task);
  j.update({{"file", o.data_file.string()}, {"examples", d.size()}, {"truncated", stats.truncated}, {"seconds", secs}});
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

template <class Plan>
int commands<Plan>::predict(const predict_options& o, const run_card& card) {
  const model_dir md = open_model_dir(o.model_dir);
  // Input: one text per line (sequence) or one whitespace-tokenised sentence per line (token). Every
  // input line gets its output: a blank line gives a blank line, so outputs stay aligned with inputs.
  std::ifstream file;
  const bool from_stdin = o.input_file.empty() || o.input_file == "-";
  if (!from_stdin) {
    file.open(o.input_file, std::ios::binary);
    if (!file) throw peft::io::io_error("cannot open '" + o.input_file.string() + "'");
  }
  std::istream& in = from_stdin ? std::cin : file;
  const std::string where = from_stdin ? "<stdin>" : o.input_file.string();
  dataset d{where, {}, {}};
  std::vector<std::optional<std::size_t>> example_of_line;  // per input line: its example, or none (blank)
  const std::string placeholder = card.labels.front();     // labels are unknown; the batches need one
  std::string line;
  for (std::size_t n = 1; peft::data::detail::read_text_line(in, line, o.max_line_bytes, where, n); ++n) {
    if (line.find_first_not_of(" \t") == std::string::npos) {
      example_of_line.emplace_back();
      continue;
    }
    example_of_line.emplace_back(d.size());
    if (card.task == "token") {
      peft::data::tagged_sentence s;
      std::istringstream words(line);
      for (std::string w; words >> w;) s.tokens.push_back(w), s.tags.push_back(placeholder);
      s.first_line = n;
      d.sentences.push_back(std::move(s));
    } else {
      d.texts.push_back({line, std::nullopt, placeholder, n});
    }
  }
  if (in.bad()) throw peft::io::io_error("reading " + where + " failed");
  if (d.size() == 0) throw peft::data::data_error(where + ": no text to label");
  std::vector<peft::data::labeled_batch> batches;
  try {
    batches = make_batches(md.tokenizer, d, card,
                           {.batch_size = o.batch_size, .max_length = card.max_length, .truncate = card.truncate || o.truncate});
  } catch (const peft::data::data_error& e) {
    if (std::string(e.what()).find("exceed the maximum length") == std::string::npos) throw;
    throw peft::data::data_error(std::string(e.what()) + " (predict --truncate labels it from its first tokens)");
  }
  session<Plan> s(md, card, 0, o.threads);
  load_for_inference(s, md, o.adapter_dir, o.frozen_weights);
  const auto r = s.evaluate(batches, d, md.tokenizer, false);
  std::string out;
  char number[32];
  for (const auto& i : example_of_line) {
    if (!i) {
      out += '\n';
    } else if (card.task == "token") {
      for (std::size_t w = 0; w < d.sentences[*i].tokens.size(); ++w) {
        std::snprintf(number, sizeof number, "%.4f", double(r.confidence[*i][w]));
        out += d.sentences[*i].tokens[w] + '\t' + r.predicted[*i][w] + '\t' + number + '\n';
      }
      out += '\n';
    } else {
      std::snprintf(number, sizeof number, "%.4f", double(r.confidence[*i][0]));
      out += r.predicted[*i][0] + '\t' + number + '\t' + d.texts[*i].text + '\n';
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

template <class Plan>
int commands<Plan>::merge(const merge_options& o, const run_card& card) {
  if (o.adapter_dir.empty()) throw peft::config_error("merge: --adapter is required");
  refuse_output_over_input(o.output_dir, o.model_dir, "--model");
  refuse_output_over_input(o.output_dir, o.adapter_dir, "--adapter");
  if (fs::exists(o.output_dir) && !fs::is_directory(o.output_dir))
    throw peft::io::io_error("the output '" + o.output_dir.string() + "' exists and is not a directory");
  if (fs::exists(o.output_dir) && !fs::is_empty(o.output_dir)) {
    if (!o.overwrite) throw peft::io::io_error("'" + o.output_dir.string() + "' is not empty; pass --overwrite to replace it");
    // --overwrite replaces the whole directory: only a model directory, never one with other files.
    static const std::set<std::string> ours = {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json",
                                               "tokenizer_config.json", "special_tokens_map.json", "peft_train.json"};
    for (const auto& e : fs::directory_iterator(o.output_dir))
      if (!ours.count(e.path().filename().string()))
        throw peft::io::io_error("refusing to replace '" + o.output_dir.string() + "': it holds '" + e.path().filename().string() +
                                 "', which merge does not write (is it a model directory?)");
  }
  const model_dir md = open_model_dir(o.model_dir);
  session<Plan> s(md, card, 0, 0);
  load_for_inference(s, md, o.adapter_dir);
  // Written beside the target and swapped in when complete: a kill leaves the previous model whole.
  peft::io::staging_directory staged(o.output_dir, "merge");
  s.with_model([&](auto& m) {
    peft::io::save_merged_checkpoint(
        s.ctx(), m, staged.path(),
        md.config.to_json(card.task == "token" ? "BertForTokenClassification" : "BertForSequenceClassification", card.labels));
  });
  copy_tokenizer_files(o.model_dir, staged.path());
  run_card merged = card;
  merged.method = "full";
  merged.base_model = fs::absolute(o.model_dir).lexically_normal().string();
  merged.write(staged.path());
  staged.commit();
  std::printf("merged %s into %s: %s (%.1f MB)\n", o.adapter_dir.string().c_str(), o.model_dir.string().c_str(),
              o.output_dir.string().c_str(), double(size_on_disk(o.output_dir)) / 1048576.0);
  return 0;
}

}  // namespace peft_train
