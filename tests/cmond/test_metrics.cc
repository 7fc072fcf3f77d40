// SPDX-License-Identifier: MIT
// cmond_* families: valid names, HELP on every family, label sets as documented.
#include "metrics.h"

#include <doctest/doctest.h>
#include <prometheus/check_names.h>

#include <regex>
#include <set>
#include <sstream>

using namespace cmond;

namespace {

std::set<std::string> family_names(const std::string& text) {
    std::set<std::string> names;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("# TYPE ", 0) == 0) {
            names.insert(line.substr(7, line.find(' ', 7) - 7));
        }
    }
    return names;
}

} // namespace

TEST_SUITE("metrics") {

    TEST_CASE("every family has a valid name, the cmond_ prefix and a HELP line ending in '.'") {
        Metrics m;
        m.request("/health", 200, 0.01);
        m.command_run("health", "ok", 0.003);
        m.command_rejected("health", "busy");
        m.command_coalesced("health");
        m.set_waiting("health", 2);
        m.command_started("health");
        m.command_finished("health");
        m.auth_failure("wrong");
        m.rate_limited_request();
        m.client_blocked();
        m.set_blocked_clients(1);
        const std::string text = m.render();
        const auto names = family_names(text);
        const std::set<std::string> expected = {
            "cmond_http_requests_total",
            "cmond_http_request_duration_seconds",
            "cmond_command_runs_total",
            "cmond_command_duration_seconds",
            "cmond_command_rejections_total",
            "cmond_command_coalesced_requests_total",
            "cmond_command_waiting_requests",
            "cmond_commands_running",
            "cmond_auth_failures_total",
            "cmond_rate_limited_requests_total",
            "cmond_rate_limited_clients_total",
            "cmond_rate_limited_clients",
            "cmond_http_rejections_total",
            "cmond_http_connections",
            "cmond_build_info",
            "cmond_start_time_seconds",
        };
        CHECK(names == expected);
        for (const auto& n : names) {
            CAPTURE(n);
            CHECK(prometheus::CheckMetricName(n));
            const auto help = text.find("# HELP " + n + " ");
            REQUIRE(help != std::string::npos);
            const auto eol = text.find('\n', help);
            CHECK(text[eol - 1] == '.');
        }
        CHECK(text.find(R"(cmond_http_requests_total{code="200",route="/health"} 1)") !=
              std::string::npos);
        CHECK(text.find(R"(cmond_command_runs_total{command="health",result="ok"} 1)") !=
              std::string::npos);
        CHECK(
            text.find(R"(cmond_command_duration_seconds_bucket{command="health",le="0.005"} 1)") !=
            std::string::npos);
        CHECK(text.find(R"(cmond_auth_failures_total{reason="wrong"} 1)") != std::string::npos);
        CHECK(text.find(R"(cmond_auth_failures_total{reason="missing"} 0)") != std::string::npos);
        CHECK(text.find("cmond_rate_limited_clients 1") != std::string::npos);
        CHECK(text.find(R"(cmond_commands_running{command="health"} 0)") != std::string::npos);
        CHECK(text.find(R"(cmond_command_coalesced_requests_total{command="health"} 1)") !=
              std::string::npos);
        CHECK(text.find(R"(cmond_command_waiting_requests{command="health"} 2)") !=
              std::string::npos);
    }

    TEST_CASE("extra collectables are appended to the exposition") {
        struct Fixed : prometheus::Collectable {
            std::vector<prometheus::MetricFamily> Collect() const override {
                prometheus::ClientMetric m;
                m.gauge.value = 42;
                return {{"extra_gauge", "An extra gauge.", prometheus::MetricType::Gauge, {m}}};
            }
        };
        Metrics m;
        m.add_collectable(std::make_shared<Fixed>());
        const std::string text = m.render();
        CHECK(text.find("# HELP extra_gauge An extra gauge.") != std::string::npos);
        CHECK(text.find("extra_gauge 42") != std::string::npos);
    }

} // TEST_SUITE
