// SPDX-License-Identifier: MIT
// cmond's configuration: defaults, one option table shared by the command-line parser, the config
// file parser and --help, and the validation that turns every bad value into a ConfigError naming
// the key (main prints it and exits with status 2; nothing falls back to a default silently).
//
// Config file format (see cmond.conf.example):
//   # comment (whole lines only, since values such as argv may contain '#')
//   key = value                 global options, the same keys as the flags (--key-file = key_file)
//   [command NAME]              then per-command keys: argv, timeout, output_cap, workdir,
//   argv = ["git", "pull"]      concurrency, enabled, coalesce; argv is a JSON array of strings
// Values are taken literally after trimming spaces; durations need a unit (500ms, 30s, 5m, 1h);
// sizes are bytes with an optional KiB/MiB suffix. A key given twice in one section is an error.
// Precedence: defaults < config file < flags (the file named by --config is read first).
#pragma once

#include "commands.h"
#include "log.h"
#include "reader.h"

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace cmond {

enum class RestartMode {
    Reexec, // POST /restart: answer, drain, then execv(/proc/self/exe, same argv)
    Exit,   // POST /restart: answer, drain, then exit with restart_exit_code for a supervisor
};

struct Config {
    std::string bind = "127.0.0.1";
    int port = 8000; // 0: any free port, printed on stdout
    std::string key_file = "client_secret.key";
    std::string tls_cert; // both or neither
    std::string tls_key;
    std::string workdir = ".";                            // made absolute by finalize()
    std::string stats_dir = arena::client::default_dir(); // read by /arena and /metrics
    std::string procfs = "/proc";   // where the reader checks that a page's process is alive
    std::string command_ld_preload; // LD_PRELOAD of commands; empty: none (never cmond's own)
    unsigned threads = 16;
    Millis http_timeout{10'000};    // a whole request (head and body); keep-alive idle; a write
    unsigned max_connections = 512; // client connections open at once
    unsigned max_connections_per_address = 64;
    Millis shutdown_timeout{10'000};
    Millis kill_grace{2'000};
    RestartMode restart_mode = RestartMode::Reexec;
    int restart_exit_code = 75; // EX_TEMPFAIL
    unsigned auth_max_failures = 5;
    Millis auth_failure_window{60'000};
    Millis auth_block_time{60'000};
    bool syslog = true;
    log::Level log_level = log::Level::Info;
    std::vector<CommandSpec> commands = default_commands();

    bool tls() const { return !tls_cert.empty(); }
};

/// A configuration problem; what() names the key (and the file and line, or the flag).
class ConfigError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

enum class Action { Run, Help, Version, CheckConfig };

struct Invocation {
    Action action = Action::Run;
    Config config;
};

/// Parses the command line (--key value or --key=value; --command NAME.KEY=VALUE; --help,
/// --version, --check-config), reading --config FILE first. Runs finalize() for Run and
/// CheckConfig. Throws ConfigError.
Invocation parse_command_line(int argc, const char* const* argv);

/// Applies config-file text; `origin` names it in errors ("cmond.conf"). Throws ConfigError.
void apply_config_text(Config& config, std::string_view text, const std::string& origin);

/// Reads and applies a config file (at most 1 MiB). Throws ConfigError.
void apply_config_file(Config& config, const std::string& path);

/// Sets one global option from its text form. Throws ConfigError("KEY: problem").
void set_option(Config& config, std::string_view key, std::string_view value);

/// Sets one field of command `name`. Throws ConfigError("command NAME: KEY: problem").
void set_command_option(Config& config, std::string_view name, std::string_view key,
                        std::string_view value);

/// Cross-field checks and path resolution (TLS pair, workdirs made absolute and checked to be
/// directories). Throws ConfigError.
void finalize(Config& config);

/// The --help text, generated from the option tables and the default command table.
std::string help_text();

// ---- Value parsers, exposed for the unit tests. Each throws ConfigError("KEY: problem"). ----
Millis parse_duration(std::string_view key, std::string_view text, Millis min, Millis max);
std::size_t parse_size(std::string_view key, std::string_view text, std::size_t min,
                       std::size_t max);
long long parse_integer(std::string_view key, std::string_view text, long long min, long long max);
bool parse_bool(std::string_view key, std::string_view text);
std::vector<std::string> parse_argv(std::string_view key, std::string_view text);

} // namespace cmond
