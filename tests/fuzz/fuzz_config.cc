// SPDX-License-Identifier: MIT
// cmond's configuration parsing (cmond/config.h) on arbitrary text: as a config file
// (apply_config_text, then finalize, the order main uses) when the first byte is even, or as a
// command line (parse_command_line, one argument per line) when it is odd. Every problem must be
// a ConfigError that names something; any other exception, a crash or a sanitizer report is a
// bug. A configuration that is accepted must hold what validation promises (a TLS pair or
// nothing, commands with a name and an argv).
//
// --config is left out of command lines: it reads a file named by the input (/dev/stdin would
// block the fuzzer), and the file's text is what the other half fuzzes.
#include "config.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

[[noreturn]] void fail(const char* what) {
    fprintf(stderr, "fuzz_config: %s\n", what);
    abort();
}

void check(const cmond::Config& c) {
    if (c.tls_cert.empty() != c.tls_key.empty())
        fail("half a TLS pair accepted");
    if (c.port < 0 || c.port > 65535)
        fail("a port out of range accepted");
    for (const auto& cmd : c.commands)
        if (cmd.name.empty() || cmd.argv.empty() || cmd.argv[0].empty())
            fail("a command without a name or an argv accepted");
}

void run_text(std::string_view text) {
    cmond::Config config;
    try {
        cmond::apply_config_text(config, text, "fuzz.conf");
        cmond::finalize(config);
    } catch (const cmond::ConfigError& e) {
        if (*e.what() == '\0')
            fail("a ConfigError without a message");
        return;
    }
    check(config);
}

void run_argv(std::string_view text) {
    std::vector<std::string> args{"cmond"};
    size_t start = 0;
    while (start <= text.size()) {
        const size_t nl = text.find('\n', start);
        const size_t end = nl == std::string_view::npos ? text.size() : nl;
        args.emplace_back(text.substr(start, end - start));
        if (args.back().find('\0') != std::string::npos)
            return; // not an argument a process can be given
        if (args.back().rfind("--config", 0) == 0)
            return;
        start = end + 1;
    }
    std::vector<const char*> argv;
    for (const auto& a : args)
        argv.push_back(a.c_str());
    argv.push_back(nullptr);
    try {
        const cmond::Invocation inv =
            cmond::parse_command_line(static_cast<int>(args.size()), argv.data());
        if (inv.action == cmond::Action::Run || inv.action == cmond::Action::CheckConfig)
            check(inv.config);
    } catch (const cmond::ConfigError& e) {
        if (*e.what() == '\0')
            fail("a ConfigError without a message");
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0)
        return 0;
    const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
    if ((data[0] & 1) == 0)
        run_text(text);
    else
        run_argv(text);
    return 0;
}
