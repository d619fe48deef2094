// `loom plot`: draws the JSON lines a training run wrote (launch/metrics.h, docs/metrics.md) as
// a PNG with gnuplot, titled with the run's name: training and validation loss over the steps
// above, tokens per second and MFU below, events such as resumes and rollbacks as dashed vertical
// lines with labels that never overlap. A step logged more than once (a resumed or rolled-back
// run logs some steps again) counts with its last record.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/check.h"
#include "core/base/file_io.h"
#include "data/json.h"
#include "launch/cli.h"
#include "launch/commands.h"

extern char** environ;

namespace loom {

namespace fs = std::filesystem;

const std::vector<FlagSpec>& plot_flags() {
  static const std::vector<FlagSpec> flags = {
      {"out", "PNG", "the image to write (default: the input's name with .png for .jsonl)"},
      {"title", "TEXT", "the title above both panels (default: the run's name, the input's directory)"},
      {"log-loss", "", "draw the loss on a logarithmic axis"},
      {"help", "", "show this help"},
  };
  return flags;
}

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct TrainPoint {
  double loss = kNaN;
  double tokens_per_s = kNaN;
  double mfu = kNaN;
};

struct Event {
  std::string name;
  std::string message;
};

struct Metrics {
  std::map<int64_t, TrainPoint> train;          // by step; the last record of a step wins
  std::map<int64_t, double> val_loss;           // eval records that have val_loss
  std::map<int64_t, double> accuracy;           // eval records that have accuracy (a fraction)
  std::map<int64_t, int> evals;                 // every eval record's step
  // The scores of train.eval_task's tasks (NAME/acc, NAME/acc_norm, NAME/exact_match: fractions),
  // by key, then step.
  std::map<std::string, std::map<int64_t, double>> task_scores;
  std::map<std::pair<int64_t, std::string>, Event> events;  // by (step, name)
};

// The value of number field `key` of record `r`: NaN when absent or null.
// Whether an eval record's key is a task's score drawn beside the held-out accuracy.
bool is_task_score(const std::string& key) {
  for (const std::string suffix : {"/acc", "/acc_norm", "/exact_match"}) {
    if (key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0) return true;
  }
  return false;
}

double number_field(const JsonValue& r, const char* key, const std::string& where) {
  const JsonValue* v = r.find(key);
  if (v == nullptr || v->kind == JsonValue::Kind::kNull) return kNaN;
  if (v->kind != JsonValue::Kind::kNumber) {
    fail_user(where, "expected \"" + std::string(key) + "\" to be a number or null, found", json_kind_name(v->kind));
  }
  return std::strtod(v->text.c_str(), nullptr);
}

std::string string_field(const JsonValue& r, const char* key, const std::string& where) {
  const JsonValue* v = r.find(key);
  if (v == nullptr || v->kind != JsonValue::Kind::kString) {
    const std::string found = v == nullptr ? "none" : json_kind_name(v->kind);
    fail_user(where, "expected a string \"" + std::string(key) + "\", found " + found);
  }
  return v->text;
}

int64_t step_field(const JsonValue& r, const std::string& where) {
  const JsonValue* v = r.find("step");
  const std::optional<int64_t> step =
      v != nullptr && v->kind == JsonValue::Kind::kNumber ? v->as_int64() : std::nullopt;
  if (!step) fail_user(where, "expected an integer \"step\"");
  return *step;
}

// Reads every record of `path`. An unterminated last line that does not parse is a record being
// written by a run in progress and is left out; any other bad line is a UserError "path:N: ...".
Metrics read_metrics(const std::string& path) {
  const std::string text = read_file(path, "metrics file");
  Metrics m;
  size_t begin = 0;
  for (int64_t line_no = 1; begin < text.size(); ++line_no) {
    size_t end = text.find('\n', begin);
    const bool terminated = end != std::string::npos;
    if (!terminated) end = text.size();
    const std::string_view line(text.data() + begin, end - begin);
    begin = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no) + ":";
    JsonValue r;
    try {
      r = json_parse(line);
    } catch (const JsonError& e) {
      if (!terminated) break;
      fail_user(where, e.what());
    }
    if (r.kind != JsonValue::Kind::kObject) {
      fail_user(where, "expected a JSON object (one record per line), found", json_kind_name(r.kind));
    }
    const std::string kind = string_field(r, "kind", where);
    if (kind == "train") {
      TrainPoint& p = m.train[step_field(r, where)];
      p.loss = number_field(r, "loss", where);
      p.tokens_per_s = number_field(r, "tokens_per_s", where);
      p.mfu = number_field(r, "mfu", where);
    } else if (kind == "eval") {
      const int64_t step = step_field(r, where);
      m.evals[step] = 1;
      const double v = number_field(r, "val_loss", where);
      if (std::isfinite(v)) m.val_loss[step] = v;
      const double acc = number_field(r, "accuracy", where);
      if (std::isfinite(acc)) m.accuracy[step] = acc;
      for (const auto& [key, value] : r.members) {
        if (value.kind != JsonValue::Kind::kNumber || !is_task_score(key)) continue;
        const double score = std::strtod(value.text.c_str(), nullptr);
        if (std::isfinite(score)) m.task_scores[key][step] = score;
      }
    } else if (kind == "event") {
      const int64_t step = step_field(r, where);
      Event e{string_field(r, "event", where), ""};
      if (const JsonValue* msg = r.find("message"); msg != nullptr && msg->kind == JsonValue::Kind::kString) {
        e.message = msg->text;
      }
      m.events[{step, e.name}] = e;
    }  // other kinds: a later Loom's records, not ours to draw
  }
  return m;
}

// `text` as a gnuplot single-quoted string (no escapes inside but '' for a quote); control
// characters become spaces.
std::string gp_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += "''";
    else if (static_cast<unsigned char>(c) < 0x20) out += ' ';
    else out += c;
  }
  return out + "'";
}

std::string gp_number(double x) {
  if (!std::isfinite(x)) return "?";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}

// A directory under the system's temporary directory, removed with everything in it.
class TempDirectory {
 public:
  TempDirectory() {
    std::string pattern = (fs::temp_directory_path() / "loom_plot_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      fail_user("cannot create a temporary directory under", fs::temp_directory_path().string() + ":",
                std::strerror(errno));
    }
    path_ = pattern;
  }
  ~TempDirectory() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDirectory(const TempDirectory&) = delete;
  TempDirectory& operator=(const TempDirectory&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out.flush()) fail_user("cannot write the temporary file", path);
}

// The gnuplot executable on PATH, or "".
std::string find_gnuplot() {
  const char* env = std::getenv("PATH");
  std::string_view dirs = env != nullptr ? env : "";
  while (true) {
    const size_t colon = dirs.find(':');
    const std::string dir(dirs.substr(0, colon));
    const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/gnuplot";
    if (::access(candidate.c_str(), X_OK) == 0 && fs::is_regular_file(candidate)) return candidate;
    if (colon == std::string_view::npos) return "";
    dirs.remove_prefix(colon + 1);
  }
}

// Runs `gnuplot script` with its output in `log`; UserError with what it said unless it
// succeeds.
void run_gnuplot(const std::string& gnuplot, const std::string& script, const std::string& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::string arg0 = "gnuplot", arg1 = script;
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, gnuplot.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) fail_user("cannot run", gnuplot + ":", std::strerror(rc));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail_user("cannot wait for gnuplot:", std::strerror(errno));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  std::ifstream in(log);
  std::string said, line;
  while (std::getline(in, line)) {
    const size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    said += (said.empty() ? "" : "; ") + line.substr(first);
  }
  const std::string how = WIFEXITED(status) ? "with exit status " + std::to_string(WEXITSTATUS(status))
                                            : "by signal " + std::to_string(WTERMSIG(status));
  fail_user("gnuplot failed", how + (said.empty() ? std::string() : ": " + said));
}

// Tick marks for a logarithmic axis over [lo, hi] (0 < lo <= hi): mantissas x powers of ten,
// from the sparsest series that gives at least four ticks (gnuplot's own are one per decade,
// too few for a loss that falls from 11 to 3), else the densest; "" when that has none.
std::string log_ticks(double lo, double hi) {
  const std::vector<std::vector<double>> series = {
      {1},
      {1, 2, 5},
      {1, 1.5, 2, 3, 4, 5, 6, 7, 8},
      {1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5, 8, 8.5, 9, 9.5}};
  std::string best;
  for (const std::vector<double>& mantissas : series) {
    std::vector<double> ticks;
    for (int e = static_cast<int>(std::floor(std::log10(lo))); e <= static_cast<int>(std::ceil(std::log10(hi))); ++e) {
      for (double mantissa : mantissas) {
        const double t = mantissa * std::pow(10.0, e);
        if (t >= lo && t <= hi) ticks.push_back(t);
      }
    }
    if (ticks.empty()) continue;
    std::string out;
    for (double t : ticks) out += (out.empty() ? "(" : ", ") + gp_number(t);
    best = out + ")";
    if (ticks.size() >= 4) break;
  }
  return best;
}

// The colour of an event's mark: rollbacks and stops red, resumes blue, the rest grey.
const char* event_colour(const std::string& name) {
  if (name == "rollback" || name == "stop") return "#c0392b";
  if (name == "resume") return "#2471a3";
  return "#7f8c8d";
}

// The colour of a label of several events: the red of a rollback or stop among them, else the
// blue of a resume, else grey.
const char* label_colour(const std::vector<std::string>& names) {
  const char* colour = event_colour("");
  for (const std::string& name : names) {
    if (name == "rollback" || name == "stop") return event_colour(name);
    if (name == "resume") colour = event_colour(name);
  }
  return colour;
}

// The title of a run's plot: the name of the directory of its metrics file, which is the run's
// train.out_dir ("runs/demo/metrics.jsonl": "demo"), and the file's name when it is not the
// default metrics.jsonl ("logs/old.jsonl": "logs (old.jsonl)").
std::string run_name_of(const std::string& metrics_file) {
  const fs::path path = fs::absolute(metrics_file).lexically_normal();
  const std::string dir = path.parent_path().filename().string(), file = path.filename().string();
  if (dir.empty()) return file;
  return file == "metrics.jsonl" ? dir : dir + " (" + file + ")";
}

// The gnuplot commands that mark events on both panels: a dashed vertical line for every event
// but checkpoint saves (routine, and as many as the saves) between steps `first` and `last`, and
// its name written upwards on a white box beside the line, in front of the curves. Names of
// marks within 2% of the steps of the first of them share one label ("resume, rollback"), so
// that no two labels overlap; none are written when there would be more than 12.
std::string event_marks(const Metrics& m, int64_t first, int64_t last) {
  struct Label {
    int64_t step;
    std::vector<std::string> names;
  };
  std::string s;
  std::vector<Label> labels;
  int arrow = 0;
  for (const auto& [key, e] : m.events) {
    const int64_t step = key.first;
    if (e.name == "checkpoint" || step < first || step > last) continue;
    const std::string x = std::to_string(step);
    s += "set arrow " + std::to_string(++arrow) + " from " + x + ", graph 0 to " + x +
         ", graph 1 nohead dt 2 lw 1.2 lc rgb '" + event_colour(e.name) + "' back\n";
    if (labels.empty() || static_cast<double>(step - labels.back().step) >= 0.02 * static_cast<double>(last - first)) {
      labels.push_back({step, {}});
    }
    std::vector<std::string>& names = labels.back().names;
    if (std::find(names.begin(), names.end(), e.name) == names.end()) names.push_back(e.name);
  }
  if (labels.size() > 12) return s;
  s += "set style textbox opaque noborder margins 1,1\n";
  for (size_t i = 0; i < labels.size(); ++i) {
    std::string text;
    for (const std::string& name : labels[i].names) text += (text.empty() ? "" : ", ") + name;
    // Right of a line at the left edge, where the left would cover the axis' numbers.
    const bool at_left_edge = static_cast<double>(labels[i].step - first) < 0.03 * static_cast<double>(last - first);
    s += "set label " + std::to_string(i + 1) + " " + gp_quote(text) + " at " + std::to_string(labels[i].step) +
         ", graph 0.98 rotate by 90 right offset " + (at_left_edge ? "1.6" : "-1.6") + ",0 font ',9' tc rgb '" +
         label_colour(labels[i].names) + "' boxed front noenhanced\n";
  }
  return s;
}

std::string gnuplot_script(const Metrics& m, const std::string& train_file, const std::string& val_file,
                           const std::string& accuracy_file,
                           const std::vector<std::pair<std::string, std::string>>& task_files, const std::string& png,
                           const std::string& title, bool log_loss) {
  int64_t first = m.train.begin()->first, last = m.train.rbegin()->first;
  for (const auto& [step, v] : m.val_loss) first = std::min(first, step), last = std::max(last, step);
  if (first == last) --first, ++last;
  bool have_mfu = false, have_rate = false, positive_loss = true;
  double max_rate = 0, max_mfu = 0, min_loss = std::numeric_limits<double>::infinity(), max_loss = 0;
  auto span_loss = [&](double v) {
    if (std::isfinite(v)) min_loss = std::min(min_loss, v), max_loss = std::max(max_loss, v);
  };
  for (const auto& [step, v] : m.val_loss) span_loss(v);
  for (const auto& [step, p] : m.train) {
    span_loss(p.loss);
    if (std::isfinite(p.tokens_per_s)) max_rate = std::max(max_rate, p.tokens_per_s);
    if (std::isfinite(p.mfu)) max_mfu = std::max(max_mfu, p.mfu);
    have_mfu = have_mfu || std::isfinite(p.mfu);
    have_rate = have_rate || std::isfinite(p.tokens_per_s);
    if (std::isfinite(p.loss) && p.loss <= 0) positive_loss = false;
  }
  for (const auto& [step, v] : m.val_loss) positive_loss = positive_loss && v > 0;
  // Tokens per second in thousands or millions, so that the tick labels stay short.
  const std::pair<double, std::string> rate_unit = max_rate >= 2e6   ? std::make_pair(1e6, std::string("million"))
                                                   : max_rate >= 2e3 ? std::make_pair(1e3, std::string("thousand"))
                                                                     : std::make_pair(1.0, std::string());
  // A line through one point is not drawn: a lone record is a dot.
  const std::string style = m.train.size() > 1 ? "lines" : "points pt 7 ps 1.5";

  std::string s;
  s += "set datafile missing '?'\n";
  s += "if (strstrt(' '.GPVAL_TERMINALS.' ', ' pngcairo ') > 0) {\n"
       "  set terminal pngcairo size 1200,900 enhanced font 'Sans,11' linewidth 1.5\n"
       "} else {\n"
       "  set terminal png size 1200,900\n"
       "}\n";
  s += "set output " + gp_quote(png) + "\n";
  s += "set multiplot title " + gp_quote(title) + " noenhanced font ',14'\n";
  s += "set xrange [" + std::to_string(first) + ":" + std::to_string(last) + "]\n";
  s += "set xlabel 'step'\nset grid lc rgb '#dddddd'\nset border lc rgb '#555555'\n";
  // The keys sit above the panels, outside the curves and the event labels.
  s += "set key outside top center horizontal samplen 3 spacing 1.1\n";
  s += "set lmargin 12\nset rmargin 12\n";
  s += event_marks(m, first, last);

  // The loss panel takes 60% of the height below the title, the throughput panel the rest;
  // without throughput figures the loss panel is the whole image.
  const bool throughput = have_rate || have_mfu;
  s += std::string(throughput ? "set origin 0,0.37\nset size 1,0.58\n" : "set origin 0,0\nset size 1,0.95\n") +
       "set ylabel 'loss (nats)'\n";
  if (log_loss && positive_loss && min_loss <= max_loss) {
    const double lo = min_loss / 1.05, hi = max_loss * 1.05;
    s += "set logscale y\nset yrange [" + gp_number(lo) + ":" + gp_number(hi) + "]\n";
    if (const std::string ticks = log_ticks(lo, hi); !ticks.empty()) s += "set ytics " + ticks + "\nset mytics 1\n";
  }
  // Held-out accuracy (the addition task's evaluation) and the tasks' scores on the right-hand
  // axis, in percent.
  if (!m.accuracy.empty() || !task_files.empty()) {
    s += "set y2label 'held-out accuracy'\nset y2tics\nset ytics nomirror\nset format y2 '%g%%'\nset y2range [0:108]\n";
  }
  s += "plot " + gp_quote(train_file) + " using 1:2 with " + style + " lw 1.5 lc rgb '#1f77b4' title 'training loss'";
  if (!m.val_loss.empty()) {
    s += ", " + gp_quote(val_file) +
         " using 1:2 with linespoints pt 7 ps 1.2 lw 1.2 lc rgb '#d62728' title 'validation loss'";
  }
  if (!m.accuracy.empty()) {
    s += ", " + gp_quote(accuracy_file) +
         " using 1:2 with linespoints pt 7 ps 1.2 lw 1.2 lc rgb '#9467bd' title 'held-out accuracy' axes x1y2";
  }
  for (const auto& [key, file] : task_files) {
    s += ", " + gp_quote(file) + " using 1:2 with linespoints pt 5 ps 1 lw 1.2 title " + gp_quote(key) +
         " noenhanced axes x1y2";
  }
  s += "\n";

  if (!throughput) return s + "unset multiplot\nset output\n";
  s += "unset logscale y\nset ytics autofreq mirror\nset mytics default\nunset label\n";
  s += "unset y2label\nunset y2tics\nset format y2 '% h'\nset y2range [*:*]\n";
  s += "set origin 0,0\nset size 1,0.37\n";
  // Room above the highest point, so that a steady rate is not drawn on the border.
  auto up_to = [](double max) { return max > 0 ? "[0:" + gp_number(1.12 * max) + "]" : std::string("[0:*]"); };
  s += "set ylabel " + gp_quote(rate_unit.second.empty() ? "tokens / s" : rate_unit.second + " tokens / s") +
       "\nset yrange " + up_to(max_rate / rate_unit.first) + "\n";
  if (have_mfu) {
    s += "set y2label 'MFU'\nset y2tics\nset ytics nomirror\nset format y2 '%g%%'\nset y2range " +
         up_to(100 * max_mfu) + "\n";
  }
  s += "plot ";
  if (have_rate) {
    s += gp_quote(train_file) + " using 1:($3/" + gp_number(rate_unit.first) + ") with " + style +
         " lw 1.5 lc rgb '#2ca02c' title 'tokens/s' axes x1y1";
  }
  if (have_mfu) {
    s += std::string(have_rate ? ", " : "") + gp_quote(train_file) +
         " using 1:4 with " + style + " lw 1.5 lc rgb '#ff7f0e' title 'MFU' axes x1y2";
  }
  s += "\nunset multiplot\nset output\n";
  return s;
}

}  // namespace

int run_plot(const std::vector<std::string>& args) {
  const ParsedArgs a = parse_args("plot", args, plot_flags());
  if (a.has("help")) {
    std::cout << usage_text("loom plot METRICS.jsonl [--out PNG] [--title TEXT] [--log-loss]",
                            "Draws the metrics a training run appended to METRICS.jsonl (metrics.jsonl in its\n"
                            "train.out_dir) as a PNG: training loss, validation loss and held-out accuracy over\n"
                            "the steps above,\n"
                            "tokens per second and MFU below, resumes, rollbacks and other events as dashed\n"
                            "lines. A step logged twice (a resumed run logs some again) counts once, with its\n"
                            "last record. Needs gnuplot (Debian: gnuplot-nox). Docs: docs/metrics.md.",
                            plot_flags());
    return 0;
  }
  if (a.positionals.size() != 1) fail_user("loom plot takes one metrics file (see loom plot --help)");
  const std::string input = a.positionals[0];
  std::string out = a.get("out", "");
  if (out.empty()) {
    const fs::path p(input);
    out = (p.extension() == ".jsonl" ? fs::path(p).replace_extension(".png") : fs::path(input + ".png")).string();
  }
  const std::string title = a.has("title") ? a.get("title", "") : run_name_of(input);

  const Metrics m = read_metrics(input);
  if (m.train.empty()) fail_user(input, "has no training records (lines with \"kind\": \"train\") to plot");
  bool any_loss = false;
  for (const auto& [step, p] : m.train) any_loss = any_loss || std::isfinite(p.loss);
  if (!any_loss) fail_user(input, "has no training record with a finite loss to plot");
  const std::string gnuplot = find_gnuplot();
  if (gnuplot.empty()) {
    fail_user("gnuplot was not found on PATH; loom plot draws with it: install it with "
              "`apt-get install gnuplot-nox` (scripts/setup.sh does)");
  }

  const TempDirectory tmp;
  std::string train_data = "# step loss tokens_per_s mfu_percent\n";
  for (const auto& [step, p] : m.train) {
    train_data += std::to_string(step) + " " + gp_number(p.loss) + " " + gp_number(p.tokens_per_s) + " " +
                  gp_number(100 * p.mfu) + "\n";
  }
  std::string val_data = "# step val_loss\n";
  for (const auto& [step, v] : m.val_loss) val_data += std::to_string(step) + " " + gp_number(v) + "\n";
  write_text(tmp.file("train.dat"), train_data);
  write_text(tmp.file("val.dat"), val_data);
  std::string accuracy_data = "# step accuracy_percent\n";
  for (const auto& [step, v] : m.accuracy) accuracy_data += std::to_string(step) + " " + gp_number(100 * v) + "\n";
  write_text(tmp.file("accuracy.dat"), accuracy_data);
  std::vector<std::pair<std::string, std::string>> task_files;  // (key, its data file)
  for (const auto& [key, scores] : m.task_scores) {
    std::string data = "# step percent\n";
    for (const auto& [step, v] : scores) data += std::to_string(step) + " " + gp_number(100 * v) + "\n";
    task_files.push_back({key, tmp.file("task" + std::to_string(task_files.size()) + ".dat")});
    write_text(task_files.back().second, data);
  }

  const fs::path out_path(out);
  if (out_path.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(out_path.parent_path(), ec);
    if (ec) fail_user("cannot create the directory", out_path.parent_path().string(), "for", out + ":", ec.message());
  }
  const std::string partial = out + ".tmp." + std::to_string(::getpid());
  write_text(tmp.file("plot.gp"), gnuplot_script(m, tmp.file("train.dat"), tmp.file("val.dat"),
                                                 tmp.file("accuracy.dat"), task_files, partial, title,
                                                 a.has("log-loss")));
  try {
    run_gnuplot(gnuplot, tmp.file("plot.gp"), tmp.file("gnuplot.log"));
    std::error_code ec;
    if (fs::file_size(partial, ec) == 0 || ec) fail_user("gnuplot wrote no image to", partial);
    fs::rename(partial, out, ec);
    if (ec) fail_user("cannot rename", partial, "to", out + ":", ec.message());
  } catch (...) {
    std::error_code ec;
    fs::remove(partial, ec);
    throw;
  }
  auto count = [](size_t n, const char* noun) { return std::to_string(n) + " " + noun + (n == 1 ? "" : "s"); };
  std::printf("wrote %s: %s (%lld .. %lld), %s, %s; title \"%s\"\n", out.c_str(),
              count(m.train.size(), "step").c_str(), static_cast<long long>(m.train.begin()->first),
              static_cast<long long>(m.train.rbegin()->first), count(m.evals.size(), "evaluation").c_str(),
              count(m.events.size(), "event").c_str(), title.c_str());
  return 0;
}

}  // namespace loom
