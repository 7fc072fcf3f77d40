// SPDX-License-Identifier: MIT
// cmond's own Prometheus metrics (cmond_* families) and the text rendering of /metrics.
// Label values are bounded: routes are the route table's patterns (or "unmatched"), commands the
// command table's names, results and reasons small fixed sets. Extra collectables (the allocator
// stats of every process: arena::client::ArenaCollector) are appended to the same exposition.
// All methods are thread-safe.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace cmond {

class Metrics {
public:
    Metrics();

    /// One HTTP response: cmond_http_requests_total{route,code} and the duration histogram.
    void request(std::string_view route, int code, double seconds);

    /// One command run: cmond_command_runs_total{command,result} and
    /// cmond_command_duration_seconds{command}. result: ok, failed, timeout, killed, signaled,
    /// output_cap, spawn_failed.
    void command_run(std::string_view command, std::string_view result, double seconds);

    /// A command request answered with the result of a run that another request's thread
    /// executed (cmond_command_coalesced_requests_total{command}). Runs plus these are the
    /// requests that got a command result.
    void command_coalesced(std::string_view command);

    /// A command request refused before running: reason busy, bad_request, disabled or
    /// shutting_down (cmond_command_rejections_total).
    void command_rejected(std::string_view command, std::string_view reason);

    /// Commands running now, per command (cmond_commands_running).
    void command_started(std::string_view command);
    void command_finished(std::string_view command);

    /// Requests waiting for a shared run to start, per coalescing command
    /// (cmond_command_waiting_requests), set before each render.
    void set_waiting(std::string_view command, std::size_t n);

    /// A failed authentication (cmond_auth_failures_total{reason}).
    void auth_failure(std::string_view reason);

    /// A request refused because its address is blocked (cmond_rate_limited_requests_total).
    void rate_limited_request();

    /// An address newly blocked (cmond_rate_limited_clients_total).
    void client_blocked();

    /// Addresses blocked now (cmond_rate_limited_clients), set before each render.
    void set_blocked_clients(std::size_t n);

    /// The HTTP front end refused or closed something (cmond_http_rejections_total{reason},
    /// reasons: front::kRejectionReasons).
    void http_rejected(std::string_view reason);

    /// Client connections open now (cmond_http_connections), set before each render.
    void set_connections(std::size_t n);

    /// Adds a source of further metric families to /metrics (kept alive by the shared_ptr).
    void add_collectable(std::shared_ptr<prometheus::Collectable> collectable);

    /// The Prometheus text exposition of everything.
    std::string render() const;

private:
    std::shared_ptr<prometheus::Registry> registry_;
    prometheus::Family<prometheus::Counter>& requests_;
    prometheus::Family<prometheus::Histogram>& request_duration_;
    prometheus::Family<prometheus::Counter>& command_runs_;
    prometheus::Family<prometheus::Histogram>& command_duration_;
    prometheus::Family<prometheus::Counter>& command_coalesced_;
    prometheus::Family<prometheus::Counter>& command_rejections_;
    prometheus::Family<prometheus::Gauge>& commands_running_;
    prometheus::Family<prometheus::Gauge>& commands_waiting_;
    prometheus::Family<prometheus::Counter>& auth_failures_;
    prometheus::Counter& rate_limited_requests_;
    prometheus::Counter& rate_limited_clients_total_;
    prometheus::Gauge& rate_limited_clients_;
    prometheus::Family<prometheus::Counter>& http_rejections_;
    prometheus::Gauge& http_connections_;

    mutable std::mutex extra_mutex_;
    std::vector<std::shared_ptr<prometheus::Collectable>> extra_;
};

} // namespace cmond
