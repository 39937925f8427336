#pragma once
// peft-train: the subcommands' definitions, instantiated once per plan by plans/plan_<i>.cpp.

#include <cmath>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "plot.hpp"
#include "session.hpp"

namespace peft_train {

namespace detail {
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
inline std::string method_description(const run_card& c) {
  std::ostringstream os;
  os << c.method;
  if (c.method.find("lora") != std::string::npos)
    os << " (r=" << c.methods.get<peft::lora_config>().r << ", alpha=" << c.methods.get<peft::lora_config>().alpha << ", dropout=" << c.methods.get<peft::lora_config>().dropout
       << ", targets " << c.lora_targets << (c.methods.get<peft::lora_config>().use_rslora ? ", rsLoRA" : "") << ")";
  if (c.method.find("houlsby") != std::string::npos || c.method.find("pfeiffer") != std::string::npos)
    os << " (bottleneck " << (c.methods.get<peft::adapter_config>().bottleneck ? std::to_string(c.methods.get<peft::adapter_config>().bottleneck)
                                                            : "hidden/" + std::to_string(int(c.methods.get<peft::adapter_config>().reduction_factor)))
       << ", " << peft::to_string(c.methods.get<peft::adapter_config>().nonlinearity) << ")";
  return os.str();
}
/// Where the trained weights go: an adapter in PEFT's layout, or a full model for full fine-tuning.
inline fs::path weights_dir(const train_options& o) {
  return o.output_dir / (o.card.method == "full" ? "model" : "adapter");
}
}  // namespace detail

template <class Plan>
int commands<Plan>::train(const train_options& o) {
  using clock = std::chrono::steady_clock;
  const auto started = clock::now();
  if (o.epochs == 0 || o.batch_size == 0 || o.eval_batch_size == 0)
    throw peft::config_error("--epochs, --batch-size and --eval-batch-size must be positive");
  if (!(o.lr > 0) || !(o.weight_decay >= 0) || !(o.warmup_ratio >= 0 && o.warmup_ratio < 1) || !(o.clip >= 0))
    throw peft::config_error("need --lr > 0, --weight-decay >= 0, 0 <= --warmup < 1, --clip >= 0 (0 disables clipping)");

  // 1. Everything is read and checked before anything is written.
  const model_dir md = open_model_dir(o.model_dir);
  run_card card = o.card;
  card.base_model = fs::absolute(o.model_dir).lexically_normal().string();
  const std::size_t positions = md.config.max_position_embeddings;
  if (card.max_length == 0) card.max_length = positions;
  if (card.max_length > positions)
    throw peft::config_error(peft::detail::concat("--max-length ", card.max_length, " exceeds the model's ", positions,
                                                  " positions (max_position_embeddings in ", (o.model_dir / "config.json").string(), ")"));
  const dataset train_set = read_dataset(o.train_file, card.task, o.delimiter, o.header);
  std::optional<dataset> dev_set;
  if (!o.dev_file.empty()) dev_set = read_dataset(o.dev_file, card.task, o.delimiter, o.header);
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
  const std::size_t steps_per_epoch = first_epoch.size();
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
      o.max_steps ? std::min(o.max_steps, o.epochs * steps_per_epoch) : o.epochs * steps_per_epoch;

  const fs::path checkpoint = o.output_dir / "checkpoint.safetensors";
  const fs::path weights = detail::weights_dir(o);
  if (o.resume && !fs::exists(checkpoint))
    throw peft::io::io_error("--resume: '" + checkpoint.string() + "' does not exist (nothing to resume)");
  if (!o.resume && !o.overwrite && (fs::exists(checkpoint) || fs::exists(weights) || fs::exists(o.output_dir / "metrics.jsonl")))
    throw peft::io::io_error("'" + o.output_dir.string() +
                             "' already holds a run; pass --resume to continue it or --overwrite to start again");

  // 2. The model: base weights, then the plan's method parameters on top.
  session<Plan> s(md, card, o.seed, o.threads);
  s.load_base(md.weights, false, true);
  const auto counts = s.with_model([](auto& m) { return peft::count_parameters(m); });
  std::cerr << "method: " << detail::method_description(card) << "\n"
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
    // No weight decay on biases, norms and bias deltas (as transformers' Trainer).
    opt.template set_group_options<peft::groups::bias>({.weight_decay = 0.0});
    opt.template set_group_options<peft::groups::norm>({.weight_decay = 0.0});
    opt.template set_group_options<peft::groups::bias_delta>({.weight_decay = 0.0});

    // 3. Progress: where the loop stands; all of it is in the checkpoint record.
    std::size_t epoch = 0, next_batch = 0, step = 0, window_rows = 0, window_tokens = 0;
    double window_loss = 0, trained_seconds = 0, best_score = -1;
    nlohmann::json last_eval;
    const nlohmann::json identity = o.identity();
    std::optional<std::int64_t> keep_log_until;
    if (o.resume) {
      const auto rec = peft::train::load_training_state(ctx, m, opt, checkpoint);
      if (rec.at("identity") != identity)
        throw peft::io::io_error("--resume: '" + checkpoint.string() +
                                 "' was saved by a run with other options or files; rerun with the same ones (or --overwrite)");
      epoch = rec.at("epoch"), next_batch = rec.at("next_batch"), step = rec.at("step");
      window_rows = rec.at("window_rows"), window_tokens = rec.at("window_tokens"), window_loss = rec.at("window_loss");
      trained_seconds = rec.at("trained_seconds"), best_score = rec.at("best_score"), last_eval = rec.at("last_eval");
      ctx.random_offset = rec.at("random_offset");
      keep_log_until = std::int64_t(step);
      std::cerr << "resuming from " << checkpoint.string() << ": epoch " << epoch + 1 << ", step " << step << "\n";
    } else if (o.overwrite) {
      for (const auto& p : {checkpoint, weights, o.output_dir / "metrics.jsonl"}) fs::remove_all(p);
    }
    fs::create_directories(o.output_dir);
    metrics_log log;
    log.open(o.output_dir / "metrics.jsonl", keep_log_until);
    auto save_state = [&](const char* why) {
      const nlohmann::json rec = {{"identity", identity}, {"epoch", epoch}, {"next_batch", next_batch}, {"step", step},
                                  {"window_rows", window_rows}, {"window_tokens", window_tokens}, {"window_loss", window_loss},
                                  {"trained_seconds", trained_seconds + detail::seconds_since(started)},
                                  {"best_score", best_score}, {"last_eval", last_eval},
                                  {"random_offset", ctx.random_offset}, {"saved_because", why}};
      peft::train::save_training_state(ctx, m, opt, rec, checkpoint);
    };
    const double seconds_before = trained_seconds;
    auto& ce = s.loss();
    peft::train::progress_bar bar;
    install_interrupt_handlers();
    bool done = step >= total_steps;
    for (; epoch < o.epochs && !done; ++epoch, next_batch = 0) {
      const auto batches = epoch == 0 ? std::move(first_epoch) : epoch_batches(epoch);
      bar.start(peft::detail::concat("epoch ", epoch + 1, "/", o.epochs), batches.size());
      for (std::size_t b = next_batch; b < batches.size() && !done; ++b) {
        const auto& batch = batches[b];
        ctx.training = true;
        opt.zero_grad(ctx);
        const double l = ce.forward(ctx, m.forward(ctx, batch.inputs), batch.labels);
        if (!std::isfinite(l))
          throw peft::numeric_error(peft::detail::concat("training loss is ", l, " at step ", step + 1,
                                                         "; lower --lr (the last checkpoint is intact)"));
        m.backward(ctx, ce.gradient());
        if (o.clip > 0) opt.clip_grad_norm(ctx, o.clip);
        const double lr_now = opt.current_lr();
        opt.step(ctx);
        ++step;
        next_batch = b + 1;
        std::size_t tokens = 0;
        for (auto v : batch.inputs.attention_mask) tokens += std::size_t(v);
        window_loss += l, ++window_rows, window_tokens += tokens;
        bar.update(b + 1, tokens, window_loss / double(window_rows));
        if (step % o.log_every == 0 || step == total_steps) {
          const double elapsed = seconds_before + detail::seconds_since(started);
          log.write({{"event", "train"}, {"epoch", epoch + 1}, {"step", step}, {"loss", window_loss / double(window_rows)},
                     {"lr", lr_now}, {"tokens", window_tokens}, {"elapsed_s", elapsed}});
          window_loss = 0, window_rows = 0, window_tokens = 0;
        }
        done = step >= total_steps;
        if (o.interrupt_after && step == o.interrupt_after) std::raise(SIGINT);
        if (interrupted.load() && !done) {  // after the last step, finishing is quicker than stopping
          save_state("interrupted");
          std::cerr << "\ninterrupted at step " << step << "; the checkpoint " << checkpoint.string()
                    << " is saved: rerun the same command with --resume to continue\n";
          return 130;
        }
        if (o.save_every && step % o.save_every == 0 && !done) save_state("periodic");
      }
      if (dev_set) {
        const auto r = s.evaluate(dev_batches, *dev_set, md.tokenizer);
        last_eval = detail::eval_record(r, card.task);
        last_eval.update({{"event", "eval"}, {"split", "dev"}, {"epoch", epoch + 1}, {"step", step}});
        log.write(last_eval);
        best_score = std::max(best_score, r.score(card.task));
        std::cerr << "epoch " << epoch + 1 << ": dev loss " << std::fixed << std::setprecision(4) << r.loss << ", "
                  << detail::metric_name(card.task) << " " << r.score(card.task) << std::defaultfloat << "\n";
      }
      if (!done) {  // the checkpoint says: start the next epoch
        const std::size_t finished = epoch;
        epoch = finished + 1, next_batch = 0;
        save_state("epoch end");
        epoch = finished;
      }
    }
    const double train_seconds = seconds_before + detail::seconds_since(started);

    // 4. The result: adapter (or model), run card, summary, plot; then the checkpoint goes.
    if (card.method == "full") {
      fs::create_directories(weights);
      peft::io::save_checkpoint(ctx, m, weights / "model.safetensors");
      peft::io::write_json_file(
          weights / "config.json",
          md.config.to_json(card.task == "token" ? "BertForTokenClassification" : "BertForSequenceClassification", card.labels));
      copy_tokenizer_files(o.model_dir, weights);
    } else {
      peft::io::save_peft_adapter(ctx, m, weights,
                                  {.base_model_name_or_path = card.base_model,
                                   .task_type = card.task == "token" ? "TOKEN_CLS" : "SEQ_CLS",
                                   .methods = run_time_methods(card)});
    }
    card.write(weights);
    const nlohmann::json summary = {
        {"method", card.method},
        {"description", detail::method_description(card)},
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
        {"train_tokens_per_s", double(train_stats.tokens) * double(step) / double(steps_per_epoch) / train_seconds},
        {"peak_rss_mb", peak_rss_mb()},
        {"weights_dir", weights.string()},
        {"weights_bytes", size_on_disk(weights)},
        {"threads", Eigen::nbThreads()}};
    peft::io::write_text_atomically(o.output_dir / "summary.json", summary.dump(2) + "\n");
    if (o.plot) draw_plot(o.output_dir, detail::metric_name(card.task));
    fs::remove(checkpoint);

    std::printf("\n== peft-train summary\n");
    std::printf("%-18s %s\n", "method", detail::method_description(card).c_str());
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
void load_for_inference(session<Plan>& s, const model_dir& md, const fs::path& adapter_dir) {
  if (adapter_dir.empty()) return s.load_base(md.weights, true, false);
  s.load_base(md.weights, false, false);
  s.with_model([&](auto& m) { peft::io::load_peft_adapter(s.ctx(), m, adapter_dir); });
}

template <class Plan>
int commands<Plan>::eval(const eval_options& o, const run_card& card) {
  const model_dir md = open_model_dir(o.model_dir);
  if (card.max_length > md.config.max_position_embeddings)
    throw peft::config_error(peft::detail::concat("the run card's max_length ", card.max_length, " exceeds the model's ",
                                                  md.config.max_position_embeddings, " positions"));
  const dataset d = read_dataset(o.data_file, card.task, o.delimiter, o.header);
  peft::data::batch_stats stats;
  const auto batches = make_batches(md.tokenizer, d, card, {.batch_size = o.batch_size, .max_length = card.max_length,
                                                            .truncate = card.truncate}, &stats);
  session<Plan> s(md, card, 0, o.threads);
  load_for_inference(s, md, o.adapter_dir);
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
  // Input: one text per line (sequence) or one whitespace-tokenised sentence per line (token).
  std::ifstream file;
  const bool from_stdin = o.input_file.empty() || o.input_file == "-";
  if (!from_stdin) {
    file.open(o.input_file);
    if (!file) throw peft::io::io_error("cannot open '" + o.input_file.string() + "'");
  }
  std::istream& in = from_stdin ? std::cin : file;
  const std::string where = from_stdin ? "<stdin>" : o.input_file.string();
  dataset d{where, {}, {}};
  const std::string placeholder = card.labels.front();  // labels are unknown; the batches need one
  std::string line;
  for (std::size_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (!peft::data::detail::valid_utf8(line)) throw peft::data::data_error(peft::detail::concat(where, ":", n, ": invalid UTF-8"));
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
  if (d.size() == 0) throw peft::data::data_error(where + ": no text to label");
  const auto batches =
      make_batches(md.tokenizer, d, card, {.batch_size = o.batch_size, .max_length = card.max_length, .truncate = card.truncate});
  session<Plan> s(md, card, 0, o.threads);
  load_for_inference(s, md, o.adapter_dir);
  const auto r = s.evaluate(batches, d, md.tokenizer, false);
  for (std::size_t i = 0; i < d.size(); ++i) {
    if (card.task == "token") {
      for (std::size_t w = 0; w < d.sentences[i].tokens.size(); ++w)
        std::printf("%s\t%s\t%.4f\n", d.sentences[i].tokens[w].c_str(), r.predicted[i][w].c_str(), double(r.confidence[i][w]));
      std::printf("\n");
    } else {
      std::printf("%s\t%.4f\t%s\n", r.predicted[i][0].c_str(), double(r.confidence[i][0]), d.texts[i].text.c_str());
    }
  }
  return 0;
}

template <class Plan>
int commands<Plan>::merge(const merge_options& o, const run_card& card) {
  if (o.adapter_dir.empty()) throw peft::config_error("merge: --adapter is required");
  if (fs::exists(o.output_dir) && !fs::is_empty(o.output_dir) && !o.overwrite)
    throw peft::io::io_error("'" + o.output_dir.string() + "' is not empty; pass --overwrite to replace its files");
  const model_dir md = open_model_dir(o.model_dir);
  session<Plan> s(md, card, 0, 0);
  load_for_inference(s, md, o.adapter_dir);
  s.with_model([&](auto& m) {
    peft::io::save_merged_checkpoint(
        s.ctx(), m, o.output_dir,
        md.config.to_json(card.task == "token" ? "BertForTokenClassification" : "BertForSequenceClassification", card.labels));
  });
  copy_tokenizer_files(o.model_dir, o.output_dir);
  run_card merged = card;
  merged.method = "full";
  merged.base_model = fs::absolute(o.model_dir).lexically_normal().string();
  merged.write(o.output_dir);
  std::printf("merged %s into %s: %s (%.1f MB)\n", o.adapter_dir.string().c_str(), o.model_dir.string().c_str(),
              o.output_dir.string().c_str(), double(size_on_disk(o.output_dir)) / 1048576.0);
  return 0;
}

}  // namespace peft_train
