// SPDX-License-Identifier: MIT
// The option tables and the two parsers (flags, config file) that share them; see config.h.
#include "config.h"

#include "common/regular_file.h"

#include <arena/stats_page.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace cmond {

using namespace std::chrono_literals;

namespace {

[[noreturn]] void fail(std::string_view key, const std::string& problem) {
    throw ConfigError(std::string(key) + ": " + problem);
}

std::string quote_value(std::string_view text) {
    // Values come from the operator, but keep error lines short and printable anyway.
    std::string out(1, '\'');
    out += log::sanitize(text, 80);
    out += '\'';
    return out;
}

std::string_view trim(std::string_view s) {
    const auto first = s.find_first_not_of(" \t\r");
    if (first == std::string_view::npos) {
        return {};
    }
    const auto last = s.find_last_not_of(" \t\r");
    return s.substr(first, last - first + 1);
}

std::string show_duration(Millis d) {
    const auto ms = d.count();
    if (ms % 3'600'000 == 0 && ms != 0) {
        return std::to_string(ms / 3'600'000) + "h";
    }
    if (ms % 60'000 == 0 && ms != 0) {
        return std::to_string(ms / 60'000) + "m";
    }
    if (ms % 1000 == 0) {
        return std::to_string(ms / 1000) + "s";
    }
    return std::to_string(ms) + "ms";
}

std::string show_size(std::size_t n) {
    if (n % (std::size_t{1} << 20) == 0 && n != 0) {
        return std::to_string(n / (std::size_t{1} << 20)) + "MiB";
    }
    if (n % 1024 == 0 && n != 0) {
        return std::to_string(n / 1024) + "KiB";
    }
    return std::to_string(n);
}

std::string show_argv(const std::vector<std::string>& argv) {
    return nlohmann::json(argv).dump();
}

std::string path_value(std::string_view key, std::string_view text) {
    if (text.empty()) {
        fail(key, "must not be empty (leave the key out to keep the default)");
    }
    if (text.find('\0') != std::string_view::npos) {
        fail(key, "must not contain NUL bytes");
    }
    return std::string(text);
}

// ---- The option tables ----
// One row per option: config-file key (the flag is "--" + key with '_' -> '-'), the value's
// name in --help, the help line, how to set it from text, and how to show the default.

struct OptionDef {
    std::string_view key;
    std::string_view value_name;
    std::string_view help;
    void (*set)(Config&, std::string_view key, std::string_view value);
    std::string (*show)(const Config&);
};

constexpr Millis kMaxDuration = 24h;

const std::array kOptions = {
    OptionDef{"bind", "ADDR", "IPv4 or IPv6 address to listen on",
              [](Config& c, std::string_view k, std::string_view v) {
                  unsigned char buf[sizeof(in6_addr)];
                  const std::string s(v);
                  if (inet_pton(AF_INET, s.c_str(), buf) != 1 &&
                      inet_pton(AF_INET6, s.c_str(), buf) != 1) {
                      fail(k, quote_value(v) + " is not an IPv4 or IPv6 address");
                  }
                  c.bind = s;
              },
              [](const Config& c) { return c.bind; }},
    OptionDef{"port", "PORT", "TCP port; 0 picks a free port and prints it on stdout",
              [](Config& c, std::string_view k, std::string_view v) {
                  c.port = static_cast<int>(parse_integer(k, v, 0, 65535));
              },
              [](const Config& c) { return std::to_string(c.port); }},
    OptionDef{
        "key_file", "PATH",
        "file with the 256-bit key as 64 hex digits; must not be accessible by group or "
        "others",
        [](Config& c, std::string_view k, std::string_view v) { c.key_file = path_value(k, v); },
        [](const Config& c) { return c.key_file; }},
    OptionDef{
        "tls_cert", "PATH", "PEM certificate chain; with tls_key, serve HTTPS",
        [](Config& c, std::string_view k, std::string_view v) { c.tls_cert = path_value(k, v); },
        [](const Config&) { return std::string("(none: plain HTTP)"); }},
    OptionDef{
        "tls_key", "PATH", "PEM private key for tls_cert",
        [](Config& c, std::string_view k, std::string_view v) { c.tls_key = path_value(k, v); },
        [](const Config&) { return std::string("(none)"); }},
    OptionDef{
        "workdir", "DIR", "working directory of commands that do not set their own",
        [](Config& c, std::string_view k, std::string_view v) { c.workdir = path_value(k, v); },
        [](const Config&) { return std::string("the directory cmond starts in"); }},
    OptionDef{"command_ld_preload", "LIBS",
              "LD_PRELOAD of the commands (e.g. the path of libarena.so to run them on the "
              "arena allocator); cmond never passes its own LD_PRELOAD on",
              [](Config& c, std::string_view k, std::string_view v) {
                  c.command_ld_preload = path_value(k, v);
              },
              [](const Config&) { return std::string("(none)"); }},
    OptionDef{
        "stats_dir", "DIR",
        "base directory of the libarena stats pages (DIR/UID/PID) that /arena and /metrics read",
        [](Config& c, std::string_view k, std::string_view v) { c.stats_dir = path_value(k, v); },
        [](const Config&) {
            return std::string("$ARENA_STATS_DIR, else " ARENA_STATS_DEFAULT_DIR);
        }},
    OptionDef{
        "procfs", "DIR",
        "procfs mount point in which /arena and /metrics check that a page's process is alive "
        "(a host's /proc mounted elsewhere)",
        [](Config& c, std::string_view k, std::string_view v) { c.procfs = path_value(k, v); },
        [](const Config& c) { return c.procfs; }},
    OptionDef{"threads", "N", "HTTP worker threads (1..1024)",
              [](Config& c, std::string_view k, std::string_view v) {
                  c.threads = static_cast<unsigned>(parse_integer(k, v, 1, 1024));
              },
              [](const Config& c) { return std::to_string(c.threads); }},
    OptionDef{"http_timeout", "DURATION",
              "deadline for a whole request (head and body) to arrive, for an answer to be "
              "written, and for an idle keep-alive connection",
              [](Config& c, std::string_view k, std::string_view v) {
                  c.http_timeout = parse_duration(k, v, 1ms, kMaxDuration);
              },
              [](const Config& c) { return show_duration(c.http_timeout); }},
    OptionDef{"max_connections", "N",
              "client connections open at once (1..65536); past it, the oldest connection that "
              "has not sent a whole request is closed for the new one",
              [](Config& c, std::string_view k, std::string_view v) {
                  c.max_connections = static_cast<unsigned>(parse_integer(k, v, 1, 65536));
              },
              [](const Config& c) { return std::to_string(c.max_connections); }},
    OptionDef{"max_connections_per_address", "N",
              "client connections open at once from one address (1..65536); past it, that "
              "address's oldest connection that has not sent a whole request is closed",
              [](Config& c, std::string_view k, std::string_view v) {
                  c.max_connections_per_address =
                      static_cast<unsigned>(parse_integer(k, v, 1, 65536));
              },
              [](const Config& c) { return std::to_string(c.max_connections_per_address); }},
    OptionDef{"shutdown_timeout", "DURATION",
              "on SIGINT, SIGTERM or restart, how long running commands may finish before "
              "their process groups are killed",
              [](Config& c, std::string_view k, std::string_view v) {
                  c.shutdown_timeout = parse_duration(k, v, 0ms, kMaxDuration);
              },
              [](const Config& c) { return show_duration(c.shutdown_timeout); }},
    OptionDef{"kill_grace", "DURATION",
              "after a command's timeout, time between SIGTERM and SIGKILL to its process group",
              [](Config& c, std::string_view k, std::string_view v) {
                  c.kill_grace = parse_duration(k, v, 0ms, 1h);
              },
              [](const Config& c) { return show_duration(c.kill_grace); }},
    OptionDef{"restart_mode", "reexec|exit",
              "POST /restart: re-execute cmond in place, or exit with restart_exit_code for a "
              "supervisor to restart it",
              [](Config& c, std::string_view k, std::string_view v) {
                  if (v == "reexec") {
                      c.restart_mode = RestartMode::Reexec;
                  } else if (v == "exit") {
                      c.restart_mode = RestartMode::Exit;
                  } else {
                      fail(k, quote_value(v) + " is not 'reexec' or 'exit'");
                  }
              },
              [](const Config& c) {
                  return std::string(c.restart_mode == RestartMode::Reexec ? "reexec" : "exit");
              }},
    OptionDef{"restart_exit_code", "N", "exit status for restart_mode = exit (1..255)",
              [](Config& c, std::string_view k, std::string_view v) {
                  c.restart_exit_code = static_cast<int>(parse_integer(k, v, 1, 255));
              },
              [](const Config& c) { return std::to_string(c.restart_exit_code); }},
    OptionDef{"auth_max_failures", "N",
              "failed authentications from one address within auth_failure_window before it is "
              "refused (1..1000000)",
              [](Config& c, std::string_view k, std::string_view v) {
                  c.auth_max_failures = static_cast<unsigned>(parse_integer(k, v, 1, 1'000'000));
              },
              [](const Config& c) { return std::to_string(c.auth_max_failures); }},
    OptionDef{"auth_failure_window", "DURATION", "window in which failures are counted",
              [](Config& c, std::string_view k, std::string_view v) {
                  c.auth_failure_window = parse_duration(k, v, 1ms, kMaxDuration);
              },
              [](const Config& c) { return show_duration(c.auth_failure_window); }},
    OptionDef{"auth_block_time", "DURATION",
              "how long an address is refused (429) after too many failures",
              [](Config& c, std::string_view k, std::string_view v) {
                  c.auth_block_time = parse_duration(k, v, 1ms, kMaxDuration);
              },
              [](const Config& c) { return show_duration(c.auth_block_time); }},
    OptionDef{
        "syslog", "BOOL", "also log to syslog (facility daemon)",
        [](Config& c, std::string_view k, std::string_view v) { c.syslog = parse_bool(k, v); },
        [](const Config& c) { return std::string(c.syslog ? "true" : "false"); }},
    OptionDef{"log_level", "LEVEL", "debug, info, warning or error",
              [](Config& c, std::string_view k, std::string_view v) {
                  if (!log::parse_level(v, c.log_level)) {
                      fail(k, quote_value(v) + " is not debug, info, warning or error");
                  }
              },
              [](const Config& c) { return std::string(log::level_name(c.log_level)); }},
};

struct CommandKeyDef {
    std::string_view key;
    std::string_view value_name;
    std::string_view help;
    void (*set)(CommandSpec&, std::string_view key, std::string_view value);
};

const std::array kCommandKeys = {
    CommandKeyDef{
        "argv", "JSON",
        "program and arguments as a JSON array of strings; "
        "\"{branch}\" inside an element is replaced by the branch",
        [](CommandSpec& s, std::string_view k, std::string_view v) { s.argv = parse_argv(k, v); }},
    CommandKeyDef{"timeout", "DURATION",
                  "then SIGTERM, and SIGKILL after kill_grace, to the "
                  "command's whole process group",
                  [](CommandSpec& s, std::string_view k, std::string_view v) {
                      s.timeout = parse_duration(k, v, 1ms, kMaxDuration);
                  }},
    CommandKeyDef{"output_cap", "SIZE",
                  "bytes of output kept (1..64MiB); a command that writes more is stopped (500)",
                  [](CommandSpec& s, std::string_view k, std::string_view v) {
                      s.output_cap = parse_size(k, v, 1, (std::size_t{64} << 20));
                  }},
    CommandKeyDef{"workdir", "DIR", "working directory (relative: to the global workdir)",
                  [](CommandSpec& s, std::string_view k, std::string_view v) {
                      s.workdir = path_value(k, v);
                  }},
    CommandKeyDef{"concurrency", "N",
                  "requests in progress at once (1..1024), each running the command or "
                  "waiting for a shared run; one more gets 429",
                  [](CommandSpec& s, std::string_view k, std::string_view v) {
                      s.concurrency = static_cast<unsigned>(parse_integer(k, v, 1, 1024));
                  }},
    CommandKeyDef{"enabled", "BOOL", "false makes the route answer 403",
                  [](CommandSpec& s, std::string_view k, std::string_view v) {
                      s.enabled = parse_bool(k, v);
                  }},
    CommandKeyDef{"coalesce", "BOOL",
                  "GET routes only: a request arriving while the command runs waits for the "
                  "next run and shares its output with the other requests waiting for it",
                  [](CommandSpec& s, std::string_view k, std::string_view v) {
                      const bool on = parse_bool(k, v);
                      if (on) {
                          if (auto err = s.coalesce_error()) {
                              fail(k, *err);
                          }
                      }
                      s.coalesce = on;
                  }},
};

std::string command_key_list() {
    std::string out;
    for (const auto& k : kCommandKeys) {
        out += out.empty() ? "" : ", ";
        out += k.key;
    }
    return out;
}

std::string known_commands(const Config& config) {
    std::string out;
    for (const auto& c : config.commands) {
        out += out.empty() ? "" : ", ";
        out += c.name;
    }
    return out;
}

std::string flag_name(std::string_view key) {
    std::string f = "--";
    for (const char c : key) {
        f += c == '_' ? '-' : c;
    }
    return f;
}

std::string key_from_flag(std::string_view flag) {
    std::string k;
    for (const char c : flag) {
        k += c == '-' ? '_' : c;
    }
    return k;
}

std::string resolve_dir(std::string_view key, const std::string& path, const std::string& base) {
    std::string full = path;
    if (full.front() != '/' && !base.empty()) {
        full = base + "/" + full;
    }
    char* real = ::realpath(full.c_str(), nullptr);
    if (real == nullptr) {
        fail(key, "cannot use directory " + quote_value(full) + ": " + std::strerror(errno));
    }
    std::string out(real);
    std::free(real);
    struct stat st {};
    if (::stat(out.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        fail(key, quote_value(full) + " is not a directory");
    }
    return out;
}

} // namespace

// ---- Value parsers ----

long long parse_integer(std::string_view key, std::string_view text, long long min, long long max) {
    long long v = 0;
    const auto* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec == std::errc::invalid_argument || ptr != end) {
        fail(key, quote_value(text) + " is not an integer");
    }
    if (ec == std::errc::result_out_of_range || v < min || v > max) {
        fail(key, quote_value(text) + " is out of range (" + std::to_string(min) + ".." +
                      std::to_string(max) + ")");
    }
    return v;
}

Millis parse_duration(std::string_view key, std::string_view text, Millis min, Millis max) {
    const auto unit_pos = text.find_first_not_of("0123456789");
    const std::string_view digits = text.substr(0, unit_pos);
    const std::string_view unit = unit_pos == std::string_view::npos ? "" : text.substr(unit_pos);
    long long scale = 0;
    if (unit == "ms") {
        scale = 1;
    } else if (unit == "s") {
        scale = 1000;
    } else if (unit == "m") {
        scale = 60'000;
    } else if (unit == "h") {
        scale = 3'600'000;
    }
    if (digits.empty() || scale == 0) {
        fail(key, quote_value(text) + " is not a duration (a whole number with a unit: 500ms, 30s, "
                                      "5m, 1h)");
    }
    long long n = 0;
    const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec != std::errc() || n > max.count() / scale || Millis(n * scale) < min) {
        fail(key, quote_value(text) + " is out of range (" + show_duration(min) + ".." +
                      show_duration(max) + ")");
    }
    (void)ptr;
    return Millis(n * scale);
}

std::size_t parse_size(std::string_view key, std::string_view text, std::size_t min,
                       std::size_t max) {
    const auto unit_pos = text.find_first_not_of("0123456789");
    const std::string_view digits = text.substr(0, unit_pos);
    const std::string_view unit = unit_pos == std::string_view::npos ? "" : text.substr(unit_pos);
    std::size_t scale = 0;
    if (unit.empty() || unit == "B") {
        scale = 1;
    } else if (unit == "KiB") {
        scale = 1024;
    } else if (unit == "MiB") {
        scale = std::size_t{1} << 20;
    }
    if (digits.empty() || scale == 0) {
        fail(key, quote_value(text) + " is not a size (bytes, or a whole number of KiB or MiB)");
    }
    std::size_t n = 0;
    const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    (void)ptr;
    if (ec != std::errc() || n > max / scale || n * scale < min) {
        fail(key, quote_value(text) + " is out of range (" + show_size(min) + ".." +
                      show_size(max) + ")");
    }
    return n * scale;
}

bool parse_bool(std::string_view key, std::string_view text) {
    if (text == "true" || text == "yes" || text == "on" || text == "1") {
        return true;
    }
    if (text == "false" || text == "no" || text == "off" || text == "0") {
        return false;
    }
    fail(key, quote_value(text) + " is not a boolean (true/false, yes/no, on/off, 1/0)");
}

std::vector<std::string> parse_argv(std::string_view key, std::string_view text) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception&) { // parse_error, and out_of_range for 1e400
        fail(key, quote_value(text) + " is not valid JSON; write a JSON array of strings such as "
                                      "[\"git\", \"pull\", \"origin\", \"--\", \"{branch}\"]");
    }
    if (!j.is_array()) {
        fail(key, "must be a JSON array of strings");
    }
    std::vector<std::string> argv;
    for (const auto& e : j) {
        if (!e.is_string()) {
            fail(key, "every element must be a string (got " + e.dump() + ")");
        }
        argv.push_back(e.get<std::string>());
    }
    if (auto err = argv_template_error(argv)) {
        fail(key, *err);
    }
    return argv;
}

// ---- Setting options ----

void set_option(Config& config, std::string_view key, std::string_view value) {
    for (const auto& o : kOptions) {
        if (o.key == key) {
            o.set(config, key, value);
            return;
        }
    }
    fail(key, "unknown option (see cmond --help)");
}

void set_command_option(Config& config, std::string_view name, std::string_view key,
                        std::string_view value) {
    CommandSpec* spec = find_command(config.commands, name);
    const std::string where = "command " + std::string(name);
    if (spec == nullptr) {
        throw ConfigError(where + ": unknown command (known: " + known_commands(config) + ")");
    }
    for (const auto& k : kCommandKeys) {
        if (k.key == key) {
            try {
                k.set(*spec, key, value);
            } catch (const ConfigError& e) {
                throw ConfigError(where + ": " + e.what());
            }
            return;
        }
    }
    throw ConfigError(where + ": " + std::string(key) + ": unknown key (" + command_key_list() +
                      ")");
}

void apply_config_text(Config& config, std::string_view text, const std::string& origin) {
    std::string section;             // "" = global, else a command name
    std::map<std::string, int> seen; // "section\nkey" -> line
    int line_no = 0;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        auto end = text.find('\n', pos);
        if (end == std::string_view::npos) {
            end = text.size();
        }
        const std::string_view line = trim(text.substr(pos, end - pos));
        pos = end + 1;
        ++line_no;
        const std::string where = origin + ":" + std::to_string(line_no) + ": ";
        if (line.empty() || line.front() == '#' || line.front() == ';') {
            continue;
        }
        try {
            if (line.front() == '[') {
                constexpr std::string_view kPrefix = "[command ";
                if (line.back() != ']' || line.substr(0, kPrefix.size()) != kPrefix) {
                    throw ConfigError("expected a section header like [command health], got " +
                                      quote_value(line));
                }
                const std::string name(
                    trim(line.substr(kPrefix.size(), line.size() - kPrefix.size() - 1)));
                if (find_command(config.commands, name) == nullptr) {
                    throw ConfigError("command " + quote_value(name) +
                                      ": unknown command (known: " + known_commands(config) + ")");
                }
                section = name;
                continue;
            }
            const auto eq = line.find('=');
            if (eq == std::string_view::npos) {
                throw ConfigError("expected 'key = value' or '[command NAME]', got " +
                                  quote_value(line));
            }
            const std::string key(trim(line.substr(0, eq)));
            const std::string_view value = trim(line.substr(eq + 1));
            if (key.empty()) {
                throw ConfigError("missing key before '='");
            }
            const auto [it, inserted] = seen.emplace(section + "\n" + key, line_no);
            if (!inserted) {
                throw ConfigError((section.empty() ? "" : "command " + section + ": ") + key +
                                  ": set twice (first on line " + std::to_string(it->second) + ")");
            }
            if (section.empty()) {
                set_option(config, key, value);
            } else {
                set_command_option(config, section, key, value);
            }
        } catch (const ConfigError& e) {
            throw ConfigError(where + e.what());
        }
    }
}

void apply_config_file(Config& config, const std::string& path) {
    constexpr std::size_t kMaxConfigSize = std::size_t{1} << 20;
    std::string text;
    try {
        cmon::RegularFile(path).read_all(text, kMaxConfigSize);
    } catch (const cmon::FileError& e) {
        throw ConfigError("config " + quote_value(path) + ": " + e.what());
    }
    apply_config_text(config, text, path);
}

void finalize(Config& config) {
    if (config.tls_cert.empty() != config.tls_key.empty()) {
        throw ConfigError(config.tls_cert.empty() ? "tls_key: set without tls_cert"
                                                  : "tls_cert: set without tls_key");
    }
    config.workdir = resolve_dir("workdir", config.workdir, "");
    for (auto& c : config.commands) {
        try {
            c.workdir = resolve_dir("workdir", c.workdir.empty() ? config.workdir : c.workdir,
                                    config.workdir);
        } catch (const ConfigError& e) {
            throw ConfigError("command " + c.name + ": " + e.what());
        }
    }
}

Invocation parse_command_line(int argc, const char* const* argv) {
    Invocation inv;
    // Pass 1: the action flags and --config, so the file is applied before any other flag.
    std::vector<std::pair<std::string, std::string>> flags; // (flag, value)
    std::string config_path;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            inv.action = Action::Help;
            return inv;
        }
        if (arg == "--version") {
            inv.action = Action::Version;
            return inv;
        }
        if (arg == "--check-config") {
            inv.action = Action::CheckConfig;
            continue;
        }
        if (arg.substr(0, 2) != "--" || arg.size() == 2) {
            throw ConfigError(quote_value(arg) +
                              ": unexpected argument (options start with --; see "
                              "cmond --help)");
        }
        std::string flag;
        std::string value;
        if (const auto eq = arg.find('='); eq != std::string_view::npos) {
            flag = std::string(arg.substr(0, eq));
            value = std::string(arg.substr(eq + 1));
        } else {
            flag = std::string(arg);
            if (i + 1 >= argc) {
                throw ConfigError(flag + ": missing value");
            }
            value = argv[++i];
        }
        if (flag == "--config") {
            if (!config_path.empty()) {
                throw ConfigError("--config: given twice");
            }
            config_path = path_value("--config", value);
        } else {
            flags.emplace_back(flag, value);
        }
    }
    if (!config_path.empty()) {
        apply_config_file(inv.config, config_path);
    }
    // Pass 2: every other flag, in order. Like a key in a file, a flag may be given only once.
    std::map<std::string, int> seen;
    for (const auto& [flag, value] : flags) {
        try {
            const std::string id =
                flag == "--command" ? flag + " " + value.substr(0, value.find('=')) : flag;
            if (!seen.emplace(id, 0).second) {
                throw ConfigError("given twice");
            }
            if (flag == "--command") {
                const auto dot = value.find('.');
                const auto eq = value.find('=');
                if (dot == std::string::npos || eq == std::string::npos || eq < dot) {
                    throw ConfigError("expected NAME.KEY=VALUE, got " + quote_value(value));
                }
                set_command_option(inv.config, value.substr(0, dot),
                                   value.substr(dot + 1, eq - dot - 1), value.substr(eq + 1));
            } else {
                const std::string key = key_from_flag(std::string_view(flag).substr(2));
                bool known = false;
                for (const auto& o : kOptions) {
                    known = known || o.key == key;
                }
                if (!known) {
                    throw ConfigError("unknown option (see cmond --help)");
                }
                try {
                    set_option(inv.config, key, value);
                } catch (const ConfigError& e) {
                    // Report the flag's spelling rather than the file key's.
                    const std::string msg = e.what();
                    throw ConfigError(msg.substr(msg.find(": ") + 2));
                }
            }
        } catch (const ConfigError& e) {
            throw ConfigError(flag + ": " + e.what());
        }
    }
    finalize(inv.config);
    return inv;
}

namespace {

// Word-wraps `text` to kHelpWidth columns; continuation lines are indented by `indent`.
std::string wrap(const std::string& text, std::size_t first_col, std::size_t indent) {
    constexpr std::size_t kHelpWidth = 100;
    std::string out;
    std::size_t col = first_col;
    std::istringstream words(text);
    std::string word;
    bool first = true;
    while (words >> word) {
        if (!first && col + 1 + word.size() > kHelpWidth) {
            out += "\n" + std::string(indent, ' ');
            col = indent;
        } else if (!first) {
            out += ' ';
            ++col;
        }
        out += word;
        col += word.size();
        first = false;
    }
    return out;
}

} // namespace

std::string help_text() {
    const Config defaults;
    std::ostringstream out;
    out << "Usage: cmond [--config FILE] [OPTIONS]\n"
           "\n"
           "cmond, the authenticated HTTP ops daemon (the CMon API). Every request needs the key\n"
           "from key_file as 'access_token: <64 hex>' or 'Authorization: Bearer <64 hex>'.\n"
           "\n"
           "  --help                 show this text and exit\n"
           "  --version              print the version and exit\n"
           "  --check-config         validate configuration, key file and TLS files, then exit\n"
           "  --config FILE          read options from FILE first (key = value lines, "
           "[command NAME] sections)\n";
    for (const auto& o : kOptions) {
        std::string left = "  " + flag_name(o.key) + " " + std::string(o.value_name);
        if (left.size() < 25) {
            left.resize(25, ' ');
        } else {
            left += "\n" + std::string(25, ' ');
        }
        out << left << wrap(std::string(o.help) + " [" + o.show(defaults) + "]", 25, 25) << "\n";
    }
    out << "  --command NAME.KEY=VALUE\n"
           "                         set KEY of command NAME (the same keys as a [command NAME] "
           "section):\n";
    for (const auto& k : kCommandKeys) {
        std::string left = "      " + std::string(k.key) + " " + std::string(k.value_name);
        left.resize(25, ' ');
        out << left << wrap(std::string(k.help), 25, 25) << "\n";
    }
    out << "\nIn the config file, an option is written as its flag without '--' and with '_' "
           "for '-'\n(key_file = ...). Flags override the file. A wrong value is an error (exit "
           "status 2).\n\nCommands (defaults):\n";
    for (const auto& c : defaults.commands) {
        std::string left = "  " + c.method + " " + c.route;
        left.resize(26, ' ');
        out << left
            << wrap(c.name + ": " + show_argv(c.argv) + ", timeout " + show_duration(c.timeout) +
                        ", output_cap " + show_size(c.output_cap) + ", concurrency " +
                        std::to_string(c.concurrency) + (c.coalesce ? ", coalesce" : ""),
                    26, 28)
            << "\n";
    }
    out << "  POST /restart             restart cmond itself (restart_mode)\n"
           "  GET  /metrics             Prometheus text format (cmond_* and arena_* families)\n"
           "  GET  /arena               processes with a stats page in stats_dir\n"
           "  GET  /arena/PID           one process's allocator counters\n"
           "  POST /arena/PID/trim      ask that process's allocator to trim\n"
           "\nExit status: 0 after a clean shutdown, 1 on a runtime failure (cannot bind), "
           "2 on a\nconfiguration error (bad option, key file, TLS files), restart_exit_code "
           "after POST /restart\nwith restart_mode = exit.\n";
    return out.str();
}

} // namespace cmond
