// SPDX-License-Identifier: MIT
// The command table and the branch whitelist.
#include "commands.h"

#include <doctest/doctest.h>

#include <set>

using namespace cmond;

TEST_SUITE("commands") {

    TEST_CASE("the default table is the original CMon API") {
        const auto table = default_commands();
        struct Expect {
            const char* name;
            const char* method;
            const char* route;
            std::vector<std::string> argv;
        };
        const std::vector<Expect> expected = {
            {"health", "GET", "/health", {"uptime"}},
            {"logs", "GET", "/logs", {"journalctl", "-n", "50", "--no-pager"}},
            {"reboot", "POST", "/reboot", {"reboot"}},
            {"sync_upstream", "PUT", "/sync_upstream", {"git", "pull", "origin", "--", "{branch}"}},
            {"deploy_branch", "GET", "/deploy_branch", {"./deploy.sh", "{branch}"}},
            {"teardown_branch", "DELETE", "/teardown_branch", {"./teardown.sh", "{branch}"}},
        };
        REQUIRE(table.size() == expected.size());
        for (std::size_t i = 0; i < table.size(); ++i) {
            CAPTURE(expected[i].name);
            CHECK(table[i].name == expected[i].name);
            CHECK(table[i].method == expected[i].method);
            CHECK(table[i].route == expected[i].route);
            CHECK(table[i].argv == expected[i].argv);
            CHECK(table[i].enabled);
            CHECK(table[i].concurrency >= 1);
            CHECK(table[i].timeout.count() > 0);
            CHECK(table[i].output_cap > 0);
            CHECK_FALSE(argv_template_error(table[i].argv).has_value());
        }
        CHECK(find_command(table, "deploy_branch")->takes_branch());
        CHECK_FALSE(find_command(table, "health")->takes_branch());
        CHECK(find_command(table, "nope") == nullptr);
    }

    TEST_CASE("branch names: accepted") {
        for (const char* ok : {"main", "develop", "feature/x", "release-1.2", "a_b", "v1.0.0",
                               "user/feature/deep", "A9", "x.y"}) {
            CAPTURE(ok);
            CHECK_FALSE(branch_error(ok).has_value());
        }
        CHECK_FALSE(branch_error(std::string(100, 'a')).has_value());
    }

    TEST_CASE("branch names: refused, each with a reason") {
        const std::vector<std::string> bad = {
            "",
            std::string(101, 'a'),
            std::string(10000, 'a'),
            "main; rm -rf /",
            "--upload-pack=touch /tmp/x",
            "-x",
            "$(id)",
            "`id`",
            "a b",
            "a\nb",
            std::string("a\0b", 3),
            "..",
            "a/../b",
            "a..b",
            "/main",
            "main/",
            "a//b",
            "main.",
            ".hidden",
            "a/.b",
            "main.lock",
            "a.lock/b",
            "caf\xc3\xa9",
            "a|b",
            "a&b",
            "a>b",
            "~user",
            "a:b",
            "HEAD@{1}",
            "a*",
            "a?",
            "a[b]",
            "a\\b",
        };
        for (const auto& b : bad) {
            CAPTURE(b);
            const auto e = branch_error(b);
            REQUIRE(e.has_value());
            CHECK_FALSE(e->empty());
        }
    }

    TEST_CASE("argv templates") {
        CHECK(argv_template_error({}).has_value());
        CHECK(argv_template_error({""}).has_value());
        CHECK(argv_template_error({"{branch}"}).has_value());
        CHECK(argv_template_error({"git", "{brnach}"}).has_value());
        CHECK(argv_template_error({"git", "x{Branch}"}).has_value());
        CHECK(argv_template_error({"a", std::string("b\0c", 3)}).has_value());
        CHECK_FALSE(argv_template_error({"awk", "{print $1}"}).has_value());
        CHECK_FALSE(argv_template_error({"echo", "{}", "{ branch }"}).has_value());
        CHECK_FALSE(
            argv_template_error({"git", "--branch={branch}", "{branch}{branch}"}).has_value());
    }

    TEST_CASE("expand_argv replaces every placeholder and nothing else") {
        CommandSpec spec = default_commands().front();
        spec.argv = {"tool", "{branch}", "--ref=refs/heads/{branch}", "{branch}{branch}", "{x}"};
        const auto argv = expand_argv(spec, "feat/a");
        CHECK(argv == std::vector<std::string>{"tool", "feat/a", "--ref=refs/heads/feat/a",
                                               "feat/afeat/a", "{x}"});
        spec.argv = {"uptime"};
        CHECK(expand_argv(spec, "main") == std::vector<std::string>{"uptime"});
    }

} // TEST_SUITE
