#include "plot.hpp"

#include <spawn.h>
#include <sys/wait.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include <peft/io/atomic_file.hpp>

extern char** environ;

namespace peft_train {

bool draw_plot(const std::filesystem::path& dir, const std::string& metric_name) {
  std::ifstream in(dir / "metrics.jsonl");
  std::ostringstream train, dev;
  std::string line;
  std::size_t dev_points = 0;
  const std::string key = metric_name == "accuracy" ? "accuracy" : "f1";
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    if (j.value("event", "") == "train") train << j["step"] << ' ' << j["loss"] << '\n';
    if (j.value("event", "") == "eval" && j.contains(key)) {
      dev << j["step"] << ' ' << j[key] << ' ' << j["loss"] << '\n';
      ++dev_points;
    }
  }
  const auto svg = (dir / "training.svg").string();
  std::ostringstream gp;
  gp << "# Drawn by peft-train from metrics.jsonl; rerun with: gnuplot plot.gp\n"
     << "$train << EOD\n" << train.str() << "EOD\n"
     << "$dev << EOD\n" << dev.str() << "EOD\n"
     << "set terminal svg size 900,420 dynamic font 'sans,12' background '#ffffff'\n"
     << "set output '" << svg << "'\n"
     << "set multiplot layout 1,2\n"
     << "set grid\nset key top right\nset xlabel 'optimizer step'\n"
     << "set title 'training loss (mean over each logging window)'\n"
     << "plot $train using 1:2 with lines lw 2 lc rgb '#1f77b4' title 'train loss'"
     << (dev_points ? ", $dev using 1:3 with linespoints lw 2 pt 7 ps 1.2 lc rgb '#ff7f0e' title 'dev loss'" : "") << "\n"
     << "set title 'dev " << metric_name << " (after each epoch)'\nset key bottom right\n"
     << (dev_points ? "plot $dev using 1:2 with linespoints lw 2 pt 7 ps 1.2 lc rgb '#2ca02c' title 'dev " + metric_name + "'\n"
                    : "set label 1 'no dev file' at graph 0.4,0.5\nplot NaN notitle\n")
     << "unset multiplot\n";
  const auto script = (dir / "plot.gp").string();
  peft::io::write_text_atomically(script, gp.str());

  std::vector<char*> argv = {const_cast<char*>("gnuplot"), const_cast<char*>(script.c_str()), nullptr};
  pid_t pid = 0;
  if (posix_spawnp(&pid, "gnuplot", nullptr, nullptr, argv.data(), environ) != 0) {
    std::cerr << "note: gnuplot is not installed; the plot script is " << script << " (apt-get install gnuplot-nox)\n";
    return false;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::cerr << "note: gnuplot failed on " << script << "; no plot drawn\n";
    return false;
  }
  std::cerr << "plot: " << svg << "\n";
  return true;
}

}  // namespace peft_train
