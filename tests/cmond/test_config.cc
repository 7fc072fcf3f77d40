// SPDX-License-Identifier: MIT
// Config values, the config file format, flags and --help, all from the one option table.
#include "config.h"
#include "helpers.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <functional>

using namespace cmond;
using namespace std::chrono_literals;

namespace {

// Parses a command line given as a list (argv[0] added).
Invocation parse(std::vector<std::string> args) {
    args.insert(args.begin(), "cmond");
    std::vector<const char*> argv;
    for (const auto& a : args) {
        argv.push_back(a.c_str());
    }
    return parse_command_line(static_cast<int>(argv.size()), argv.data());
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "<no error>";
}

} // namespace

TEST_SUITE("config") {

    TEST_CASE("durations need a unit and a range") {
        CHECK(parse_duration("t", "500ms", 0ms, 24h) == 500ms);
        CHECK(parse_duration("t", "30s", 0ms, 24h) == 30s);
        CHECK(parse_duration("t", "5m", 0ms, 24h) == 5min);
        CHECK(parse_duration("t", "2h", 0ms, 24h) == 2h);
        CHECK(parse_duration("t", "0s", 0ms, 24h) == 0ms);
        for (const char* bad : {"", "30", "s", "1.5s", "-1s", " 1s", "1 s", "1sec", "1d", "1S",
                                "99999999999999999999s"}) {
            CAPTURE(bad);
            CHECK_THROWS_AS(parse_duration("t", bad, 0ms, 24h), ConfigError);
        }
        CHECK_THROWS_AS(parse_duration("t", "25h", 0ms, 24h), ConfigError);
        CHECK_THROWS_AS(parse_duration("t", "0ms", 1ms, 24h), ConfigError);
        CHECK(error_of([] {
                  parse_duration("timeout", "30", 1ms, 1h);
              }).rfind("timeout: '30'", 0) == 0);
    }

    TEST_CASE("sizes, integers and booleans") {
        CHECK(parse_size("c", "100", 1, 1 << 30) == 100);
        CHECK(parse_size("c", "64KiB", 1, 1 << 30) == 65536);
        CHECK(parse_size("c", "2MiB", 1, 1 << 30) == 2 << 20);
        for (const char* bad : {"", "1k", "1KB", "-1", "1.5MiB", "KiB", "0"}) {
            CAPTURE(bad);
            CHECK_THROWS_AS(parse_size("c", bad, 1, 1 << 30), ConfigError);
        }
        CHECK_THROWS_AS(parse_size("c", "2048MiB", 1, 1 << 30), ConfigError);
        CHECK(parse_integer("p", "8000", 0, 65535) == 8000);
        for (const char* bad : {"", "80x", "x", "65536", "-1", "1e3", " 1", "0x10"}) {
            CAPTURE(bad);
            CHECK_THROWS_AS(parse_integer("p", bad, 0, 65535), ConfigError);
        }
        CHECK(parse_bool("b", "yes"));
        CHECK_FALSE(parse_bool("b", "off"));
        CHECK_THROWS_AS(parse_bool("b", "maybe"), ConfigError);
        CHECK_THROWS_AS(parse_bool("b", "TRUE"), ConfigError);
    }

    TEST_CASE("argv is a JSON array of strings") {
        CHECK(parse_argv("argv", R"(["git", "pull", "origin", "--", "{branch}"])") ==
              std::vector<std::string>{"git", "pull", "origin", "--", "{branch}"});
        CHECK(parse_argv("argv", R"(["/bin/sh", "-c", "echo \"a b\" # c"])") ==
              std::vector<std::string>{"/bin/sh", "-c", "echo \"a b\" # c"});
        for (const char* bad :
             {"uptime", "[]", "[\"\"]", "[1]", "{\"a\":1}", "[\"a\", null]", "[\"a\"",
              "[\"a\\u0000b\"]", "[\"{branch}\"]", "[\"a\", \"{brnach}\"]",
              // a number nlohmann cannot hold: out_of_range, not parse_error (found by fuzz-config)
              "[\"a\", 1e400]"}) {
            CAPTURE(bad);
            CHECK_THROWS_AS(parse_argv("argv", bad), ConfigError);
        }
    }

    TEST_CASE("defaults are the documented ones") {
        const Config c;
        CHECK(c.bind == "127.0.0.1");
        CHECK(c.port == 8000);
        CHECK(c.key_file == "client_secret.key");
        CHECK_FALSE(c.tls());
        CHECK(c.commands.size() == default_commands().size());
    }

    TEST_CASE("config file: globals, sections, comments") {
        Config c;
        apply_config_text(c, R"(
# a comment
; another
bind = ::1
port=9000
  key_file   =   /etc/cmond/key   
shutdown_timeout = 3s
restart_mode = exit

[command health]
argv = ["/bin/echo", "hi # not a comment"]
timeout = 2s
output_cap = 1KiB
concurrency = 3

[command reboot]
enabled = no
coalesce = false

[command logs]
coalesce = off

[command deploy_branch]
coalesce = yes
)",
                          "test.conf");
        CHECK(c.bind == "::1");
        CHECK(c.port == 9000);
        CHECK(c.key_file == "/etc/cmond/key");
        CHECK(c.shutdown_timeout == 3s);
        CHECK(c.restart_mode == RestartMode::Exit);
        const auto* health = find_command(c.commands, "health");
        CHECK(health->argv == std::vector<std::string>{"/bin/echo", "hi # not a comment"});
        CHECK(health->timeout == 2s);
        CHECK(health->output_cap == 1024);
        CHECK(health->concurrency == 3);
        CHECK(health->route == "/health"); // route and method cannot be changed
        CHECK_FALSE(find_command(c.commands, "reboot")->enabled);
        CHECK(find_command(c.commands, "logs")->enabled);
        CHECK(health->coalesce); // the default for the read-only GET routes
        CHECK_FALSE(find_command(c.commands, "logs")->coalesce);
        CHECK(find_command(c.commands, "deploy_branch")->coalesce);
        CHECK_FALSE(find_command(c.commands, "reboot")->coalesce);
    }

    TEST_CASE("defaults: only /health and /logs coalesce; stats_dir follows ARENA_STATS_DIR, "
              "procfs is /proc") {
        const Config c;
        for (const auto& spec : c.commands) {
            CAPTURE(spec.name);
            CHECK(spec.coalesce == (spec.name == "health" || spec.name == "logs"));
            CHECK(spec.coalesce_error().has_value() == (spec.method != "GET"));
        }
        CHECK(c.stats_dir == arena::client::default_dir());
        CHECK(c.procfs == "/proc");
        CHECK(c.command_ld_preload.empty());
        Config set;
        apply_config_text(set,
                          "stats_dir = /srv/pages\nprocfs = /host/proc\n"
                          "command_ld_preload = /usr/lib/libarena.so\n",
                          "t.conf");
        CHECK(set.stats_dir == "/srv/pages");
        CHECK(set.procfs == "/host/proc");
        CHECK(set.command_ld_preload == "/usr/lib/libarena.so");
    }

    TEST_CASE("config file: every mistake names the file, line and key") {
        struct Case {
            const char* text;
            const char* expect; // substring of the error
        };
        const Case cases[] = {
            {"port = 70000", "t.conf:1: port: '70000' is out of range (0..65535)"},
            {"port = eighty", "t.conf:1: port: 'eighty' is not an integer"},
            {"\n\nbind = localhost", "t.conf:3: bind: 'localhost' is not an IPv4 or IPv6 address"},
            {"colour = blue", "t.conf:1: colour: unknown option"},
            {"port = 1\nport = 2", "t.conf:2: port: set twice (first on line 1)"},
            {"just words", "t.conf:1: expected 'key = value'"},
            {"= 3", "t.conf:1: missing key"},
            {"[command nope]", "t.conf:1: command 'nope': unknown command (known: health, logs"},
            {"[cmd health]", "t.conf:1: expected a section header"},
            {"[command health]\ncolour = 1", "t.conf:2: command health: colour: unknown key"},
            {"[command health]\ntimeout = 10",
             "t.conf:2: command health: timeout: '10' is not a duration"},
            {"[command health]\nargv = uptime",
             "t.conf:2: command health: argv: 'uptime' is not valid JSON"},
            {"[command health]\nconcurrency = 0", "concurrency: '0' is out of range (1..1024)"},
            {"[command health]\ntimeout = 1s\ntimeout = 2s",
             "t.conf:3: command health: timeout: set twice"},
            {"restart_mode = sometimes", "restart_mode: 'sometimes' is not 'reexec' or 'exit'"},
            {"log_level = loud", "log_level: 'loud' is not debug, info, warning or error"},
            {"syslog = maybe", "syslog: 'maybe' is not a boolean"},
            {"key_file =", "key_file: must not be empty"},
            {"threads = 0", "threads: '0' is out of range"},
            {"shutdown_timeout = 30", "shutdown_timeout: '30' is not a duration"},
            {"stats_dir =", "stats_dir: must not be empty"},
            {"procfs =", "procfs: must not be empty"},
            {"command_ld_preload =", "command_ld_preload: must not be empty"},
            {"[command reboot]\ncoalesce = true",
             "t.conf:2: command reboot: coalesce: only GET routes may share runs (POST /reboot "
             "changes state: every request must run the command itself)"},
            {"[command sync_upstream]\ncoalesce = 1", "command sync_upstream: coalesce: only GET"},
            {"[command teardown_branch]\ncoalesce = on",
             "command teardown_branch: coalesce: only GET"},
            {"[command health]\ncoalesce = sometimes", "coalesce: 'sometimes' is not a boolean"},
            {"[command health]\ncolour = 1",
             "unknown key (argv, timeout, output_cap, workdir, concurrency, enabled, coalesce)"},
        };
        for (const auto& tc : cases) {
            CAPTURE(tc.text);
            Config c;
            const std::string err = error_of([&] { apply_config_text(c, tc.text, "t.conf"); });
            CHECK_MESSAGE(err.find(tc.expect) != std::string::npos, err);
        }
    }

    TEST_CASE("a config file that cannot be read is an error") {
        Config c;
        CHECK(error_of([&] {
                  apply_config_file(c, "/nonexistent/cmond.conf");
              }).find("cannot open") != std::string::npos);
    }

    TEST_CASE("flags: both spellings, precedence over the file, --command") {
        testing::TempDir dir;
        const std::string conf =
            dir.write("c.conf", "port = 9000\nthreads = 4\n[command health]\ntimeout = 3s\n");
        auto inv = parse({"--config", conf, "--port=9100", "--bind", "::1", "--command",
                          "health.argv=[\"/bin/echo\",\"x\"]", "--command", "logs.enabled=false"});
        CHECK(inv.action == Action::Run);
        CHECK(inv.config.port == 9100); // flag wins over the file, wherever --config stands
        CHECK(inv.config.threads == 4); // from the file
        CHECK(inv.config.bind == "::1");
        const auto* health = find_command(inv.config.commands, "health");
        CHECK(health->timeout == 3s);
        CHECK(health->argv == std::vector<std::string>{"/bin/echo", "x"});
        CHECK_FALSE(find_command(inv.config.commands, "logs")->enabled);
        // finalize made every workdir absolute
        CHECK(inv.config.workdir.front() == '/');
        CHECK(health->workdir == inv.config.workdir);
    }

    TEST_CASE("flags: mistakes name the flag") {
        const std::pair<std::vector<std::string>, const char*> cases[] = {
            {{"--port", "x"}, "--port: 'x' is not an integer"},
            {{"--port"}, "--port: missing value"},
            {{"--colour", "blue"}, "--colour: unknown option"},
            {{"serve"}, "'serve': unexpected argument"},
            {{"--port", "1", "--port", "2"}, "--port: given twice"},
            {{"--command", "health"}, "--command: expected NAME.KEY=VALUE"},
            {{"--command", "nope.timeout=1s"}, "--command: command nope: unknown command"},
            {{"--command", "health.timeout=1"},
             "--command: command health: timeout: '1' is not a duration"},
            {{"--tls-cert", "/x.pem"}, "tls_cert: set without tls_key"},
            {{"--tls-key", "/x.pem"}, "tls_key: set without tls_cert"},
            {{"--workdir", "/nonexistent/dir"}, "workdir: cannot use directory '/nonexistent/dir'"},
            {{"--workdir", "/etc/hostname"}, "workdir: '/etc/hostname' is not a directory"},
            {{"--command", "deploy_branch.workdir=/nonexistent"}, "command deploy_branch: workdir"},
            {{"--config", "/nonexistent.conf"}, "cannot open"},
            {{"--config", "a", "--config", "b"}, "--config: given twice"},
        };
        for (const auto& tc : cases) {
            const auto& args = tc.first; // not a structured binding: clang 14 cannot capture those
            const char* expect = tc.second;
            CAPTURE(args.front());
            const std::string err = error_of([&] { parse(args); });
            CHECK_MESSAGE(err.find(expect) != std::string::npos, err);
        }
    }

    TEST_CASE("cmond.conf.example sets every key to its default") {
        const char* path = std::getenv("CMOND_EXAMPLE_CONF");
        REQUIRE_MESSAGE(path != nullptr, "CMOND_EXAMPLE_CONF is not set (run through meson test)");
        Config example;
        apply_config_file(example, path);
        const Config defaults;
        CHECK(example.bind == defaults.bind);
        CHECK(example.port == defaults.port);
        CHECK(example.key_file == defaults.key_file);
        CHECK(example.threads == defaults.threads);
        CHECK(example.http_timeout == defaults.http_timeout);
        CHECK(example.shutdown_timeout == defaults.shutdown_timeout);
        CHECK(example.kill_grace == defaults.kill_grace);
        CHECK(example.restart_mode == defaults.restart_mode);
        CHECK(example.restart_exit_code == defaults.restart_exit_code);
        CHECK(example.auth_max_failures == defaults.auth_max_failures);
        CHECK(example.auth_failure_window == defaults.auth_failure_window);
        CHECK(example.auth_block_time == defaults.auth_block_time);
        CHECK(example.syslog == defaults.syslog);
        CHECK(example.log_level == defaults.log_level);
        CHECK(example.stats_dir == defaults.stats_dir);
        CHECK(example.procfs == defaults.procfs);
        CHECK(example.command_ld_preload == defaults.command_ld_preload);
        REQUIRE(example.commands.size() == defaults.commands.size());
        for (std::size_t i = 0; i < defaults.commands.size(); ++i) {
            const auto& e = example.commands[i];
            const auto& d = defaults.commands[i];
            CAPTURE(d.name);
            CHECK(e.argv == d.argv);
            CHECK(e.timeout == d.timeout);
            CHECK(e.output_cap == d.output_cap);
            CHECK(e.concurrency == d.concurrency);
            CHECK(e.enabled == d.enabled);
            CHECK(e.coalesce == d.coalesce);
        }
    }

    TEST_CASE("--help, --version, --check-config") {
        CHECK(parse({"--port", "1", "--help"}).action == Action::Help);
        CHECK(parse({"--version"}).action == Action::Version);
        CHECK(parse({"--check-config"}).action == Action::CheckConfig);
    }

    TEST_CASE("--help lists every option, every command key and every default command") {
        const std::string help = help_text();
        for (const char* flag : {"--config",
                                 "--bind",
                                 "--port",
                                 "--key-file",
                                 "--tls-cert",
                                 "--tls-key",
                                 "--workdir",
                                 "--threads",
                                 "--http-timeout",
                                 "--shutdown-timeout",
                                 "--kill-grace",
                                 "--restart-mode",
                                 "--restart-exit-code",
                                 "--auth-max-failures",
                                 "--auth-failure-window",
                                 "--auth-block-time",
                                 "--syslog",
                                 "--log-level",
                                 "--stats-dir",
                                 "--command-ld-preload",
                                 "--command",
                                 "--check-config"}) {
            CAPTURE(flag);
            CHECK(help.find(flag) != std::string::npos);
        }
        for (const char* key :
             {"argv", "timeout", "output_cap", "workdir", "concurrency", "enabled", "coalesce"}) {
            CHECK(help.find(std::string("      ") + key) != std::string::npos);
        }
        for (const auto& c : default_commands()) {
            CHECK(help.find(c.method + " " + c.route) != std::string::npos);
        }
        // Every option in the help is accepted by the file parser (the same table).
        Config c;
        CHECK_NOTHROW(apply_config_text(c,
                                        "bind = 127.0.0.1\nport = 1\nkey_file = k\nworkdir = /\n"
                                        "threads = 2\nhttp_timeout = 1s\nshutdown_timeout = 1s\n"
                                        "kill_grace = 1s\nrestart_mode = exit\n"
                                        "restart_exit_code = 3\nauth_max_failures = 2\n"
                                        "auth_failure_window = 1s\nauth_block_time = 1s\n"
                                        "syslog = false\nlog_level = debug\ntls_cert = c\n"
                                        "tls_key = k\nstats_dir = /s\nprocfs = /p\n"
                                        "command_ld_preload = /l.so\n",
                                        "all.conf"));
    }

} // TEST_SUITE
