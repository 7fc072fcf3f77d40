// SPDX-License-Identifier: MIT
// One command-line option as the tools that read stats pages (arena-stat, arena-exporter) take
// them in their hand-written parsers: --name, --name=value or --name value.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

namespace arena::cli {

/// argv[i], split into its name and an inline value ("--name=value"). value() returns the
/// inline value or takes the next argument (advancing i); no_value() refuses an inline value.
/// Usage errors go to `fail`, which must not return (it prints and exits).
class Option {
public:
    using Fail = void (*)(const std::string& message);

    Option(int argc, char** argv, int& i, Fail fail)
        : argc_(argc), argv_(argv), i_(i), fail_(fail), name_(argv[i]) {
        const size_t eq = name_.find('=');
        if (name_.rfind("--", 0) == 0 && eq != std::string::npos) {
            inline_ = name_.substr(eq + 1);
            name_.resize(eq);
        }
    }

    const std::string& name() const { return name_; }
    bool operator==(const char* other) const { return name_ == other; }
    const std::optional<std::string>& inline_value() const { return inline_; }

    std::string value() {
        if (inline_)
            return *inline_;
        if (i_ + 1 >= argc_)
            fail_("option '" + name_ + "' needs a value");
        return argv_[++i_];
    }

    /// An optional value: the inline one, or the next argument when `accept(next)` says it is
    /// this option's (advancing i); nullopt when there is none.
    template <class Accept>
    std::optional<std::string> optional_value(Accept accept) {
        if (inline_)
            return inline_;
        if (i_ + 1 < argc_ && accept(std::string(argv_[i_ + 1])))
            return std::string(argv_[++i_]);
        return std::nullopt;
    }

    /// Answers --help (-h) with `usage` and --version with "`program` `version`" on stdout, and
    /// exits 0; returns for any other option.
    void answer_help_and_version(const char* usage, const char* program,
                                 const char* version) const {
        if (name_ != "--help" && name_ != "-h" && name_ != "--version")
            return;
        no_value();
        if (name_ == "--version")
            printf("%s %s\n", program, version);
        else
            fputs(usage, stdout);
        exit(0);
    }

    void no_value() const {
        if (inline_)
            fail_("option '" + name_ + "' takes no value");
    }

private:
    int argc_;
    char** argv_;
    int& i_;
    Fail fail_;
    std::string name_;
    std::optional<std::string> inline_;
};

} // namespace arena::cli
