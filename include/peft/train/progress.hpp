#pragma once
/// \file A one-line progress bar for training loops: position, loss, tokens per second and time left.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace peft::train {

/// Draws `label [#####.....] done/total loss x.xxxx  1234 tok/s  ETA m:ss` on a stream. On a terminal
/// the line is redrawn in place (at most ten times a second); otherwise a line is printed at every
/// tenth of the way, so logs stay short.
class progress_bar {
 public:
  explicit progress_bar(std::FILE* out = stderr) : out_(out), tty_(isatty(fileno(out)) != 0) {}

  /// Starts a bar of `total` steps; `label` prefixes the line.
  void start(std::string label, std::size_t total) {
    label_ = std::move(label);
    total_ = total;
    tokens_ = 0;
    last_decile_ = -1;
    begin_ = last_draw_ = clock::now();
  }
  /// Reports that `done` of `total` steps are complete, `tokens` more were processed, and the running loss.
  void update(std::size_t done, std::size_t tokens, double loss) {
    tokens_ += tokens;
    const auto now = clock::now();
    const int decile = total_ ? int(10 * done / total_) : 10;
    const bool last = done >= total_;
    if (tty_ ? (!last && now - last_draw_ < std::chrono::milliseconds(100)) : (decile == last_decile_ && !last)) return;
    last_draw_ = now;
    last_decile_ = decile;
    const double elapsed = seconds(now - begin_);
    const double rate = elapsed > 0 ? double(tokens_) / elapsed : 0;
    const double left = done ? elapsed * double(total_ - done) / double(done) : 0;
    constexpr int width = 24;
    const int filled = total_ ? int(width * done / total_) : width;
    std::string bar(std::size_t(filled), '#');
    bar.append(std::size_t(width - filled), '.');
    std::fprintf(out_, "%s%s [%s] %zu/%zu loss %.4f  %.0f tok/s  %s %s%s", tty_ ? "\r" : "", label_.c_str(), bar.c_str(), done,
                 total_, loss, rate, last ? "took" : "ETA", clock_str(last ? elapsed : left).c_str(), tty_ ? "\033[K" : "\n");
    if (tty_ && last) std::fputc('\n', out_);
    std::fflush(out_);
  }
  /// "m:ss" or "h:mm:ss".
  static std::string clock_str(double s) {
    const long t = long(s + 0.5);
    char buf[32];
    if (t >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
    return buf;
  }

 private:
  using clock = std::chrono::steady_clock;
  static double seconds(clock::duration d) { return std::chrono::duration<double>(d).count(); }

  std::FILE* out_;
  bool tty_;
  std::string label_;
  std::size_t total_ = 0, tokens_ = 0;
  int last_decile_ = -1;
  clock::time_point begin_, last_draw_;
};

}  // namespace peft::train
