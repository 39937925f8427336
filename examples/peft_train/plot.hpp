#pragma once
// peft-train: the training plot (loss and dev metric), drawn by gnuplot from the metrics log.

#include <filesystem>
#include <string>

namespace peft_train {

/// Writes `dir/plot.gp` (a gnuplot script with the data of `dir/metrics.jsonl` inline) and runs
/// gnuplot on it to draw `dir/training.svg`. Returns false, with a note on stderr, when gnuplot is
/// not installed or fails; the script stays for later use.
bool draw_plot(const std::filesystem::path& dir, const std::string& metric_name);

}  // namespace peft_train
