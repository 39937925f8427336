#pragma once
/// \file The trainer's standard callbacks: a progress bar, a JSON-lines metrics log, TensorBoard
/// scalars, and a stop-and-save on interruption (Ctrl-C).

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "peft/io/atomic_file.hpp"
#include "peft/train/progress.hpp"
#include "peft/train/tensorboard.hpp"
#include "peft/train/trainer.hpp"

namespace peft::train {

/// A progress bar per epoch ("epoch 1/3 [####....] ..."), with the running loss and tokens per second.
class progress_callback : public callback {
 public:
  explicit progress_callback(std::size_t epochs, std::FILE* out = stderr) : epochs_(epochs), bar_(out) {}
  void on_epoch_begin(const train_state& s, std::size_t batches) override {
    bar_.start(peft::detail::concat("epoch ", s.epoch + 1, "/", epochs_), batches);
  }
  void on_step_end(const train_state& s, const step_record& r, train_control&) override {
    bar_.update(s.next_batch, r.tokens, s.window_rows ? s.window_loss / double(s.window_rows) : r.loss);
  }

 private:
  std::size_t epochs_;
  progress_bar bar_;
};

/// One JSON object per line (the trainer's "train" and "eval" records), flushed as written, so a
/// killed run leaves whole lines. A fresh run starts the file anew; a resumed one first drops the
/// records of steps after the checkpoint (they are written again), atomically.
class jsonl_metrics_callback : public callback {
 public:
  explicit jsonl_metrics_callback(std::filesystem::path path) : path_(std::move(path)) {}
  jsonl_metrics_callback(const jsonl_metrics_callback&) = delete;
  jsonl_metrics_callback& operator=(const jsonl_metrics_callback&) = delete;
  ~jsonl_metrics_callback() override {
    if (f_) std::fclose(f_);
  }

  void on_train_begin(const train_state& s) override {
    const bool resumed = s.step > 0 || s.epoch > 0 || s.next_batch > 0;
    if (resumed && std::filesystem::exists(path_)) {
      std::ifstream in(path_);
      std::string line, kept;
      while (std::getline(in, line)) {
        try {
          if (nlohmann::json::parse(line).value("step", std::size_t(0)) <= s.step) kept += line + "\n";
        } catch (const nlohmann::json::exception&) {
          // a torn last line of a killed run: dropped
        }
      }
      io::write_text_atomically(path_, kept);
    }
    f_ = std::fopen(path_.c_str(), resumed ? "a" : "w");
    if (!f_) throw io::io_error("cannot open '" + path_.string() + "' for writing");
  }
  void on_log(const train_state&, const nlohmann::json& record) override { write(record); }
  void on_evaluate(const train_state&, const nlohmann::json& record, train_control&) override { write(record); }
  void on_train_end(const train_state&, stop_reason) override {
    if (f_) std::fclose(f_);
    f_ = nullptr;
  }

 private:
  void write(const nlohmann::json& record) {
    const auto line = record.dump() + "\n";
    if (!f_ || std::fputs(line.c_str(), f_) < 0 || std::fflush(f_) != 0)
      throw io::io_error("cannot write the metrics log '" + path_.string() + "'");
  }

  std::filesystem::path path_;
  std::FILE* f_ = nullptr;
};

/// TensorBoard scalars in `dir` (`tensorboard --logdir dir`): train/loss, train/lr and
/// train/grad_norm per step, and every numeric field of an evaluation as dev/<field>.
class tensorboard_callback : public callback {
 public:
  explicit tensorboard_callback(std::filesystem::path dir) : dir_(std::move(dir)) {}
  void on_train_begin(const train_state&) override { writer_.emplace(dir_); }
  void on_step_end(const train_state& s, const step_record& r, train_control&) override {
    const auto step = std::int64_t(s.step);
    writer_->add_scalar("train/loss", r.loss, step);
    writer_->add_scalar("train/lr", r.lr, step);
    writer_->add_scalar("train/grad_norm", r.grad_norm, step);
  }
  void on_evaluate(const train_state& s, const nlohmann::json& record, train_control&) override {
    for (auto it = record.begin(); it != record.end(); ++it)
      if (it.value().is_number() && it.key() != "epoch" && it.key() != "step")
        writer_->add_scalar("dev/" + it.key(), it.value().get<double>(), std::int64_t(s.step));
    writer_->flush();
  }
  void on_train_end(const train_state&, stop_reason) override {
    if (writer_) writer_->flush();
  }

 private:
  std::filesystem::path dir_;
  std::optional<tensorboard_writer> writer_;
};

/// Stops the loop, saving a checkpoint, once `flag` is set (by a signal handler, say).
class interrupt_callback : public callback {
 public:
  explicit interrupt_callback(const std::atomic<bool>& flag) : flag_(flag) {}
  void on_step_end(const train_state&, const step_record&, train_control& c) override {
    if (flag_.load()) c.stop = c.save = true;
  }

 private:
  const std::atomic<bool>& flag_;
};

}  // namespace peft::train
