// SPDX-License-Identifier: MIT
// The cmond_* metric families; see metrics.h.
#include "metrics.h"

#include "front/message.h"

#include <prometheus/text_serializer.h>

#include <chrono>

#ifndef CMOND_VERSION
#    error "CMOND_VERSION must be defined by the build (cmond/meson.build)"
#endif

namespace cmond {

namespace {

// Seconds: from a fast command (uptime, ~1 ms) to the longest default timeout (10 min).
const prometheus::Histogram::BucketBoundaries kCommandBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
const prometheus::Histogram::BucketBoundaries kRequestBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 600};

std::string str(std::string_view s) {
    return std::string(s);
}

} // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("cmond_http_requests_total")
                    .Help("HTTP responses sent by cmond, by route pattern and status code.")
                    .Register(*registry_)),
      request_duration_(prometheus::BuildHistogram()
                            .Name("cmond_http_request_duration_seconds")
                            .Help("Time from routing a request to writing its response.")
                            .Register(*registry_)),
      command_runs_(prometheus::BuildCounter()
                        .Name("cmond_command_runs_total")
                        .Help("Command processes run (one per run, however many requests "
                              "shared it), by command and result (ok, failed, timeout, killed, "
                              "signaled, output_cap, spawn_failed).")
                        .Register(*registry_)),
      command_duration_(prometheus::BuildHistogram()
                            .Name("cmond_command_duration_seconds")
                            .Help("Wall time of command runs, from spawn to reaping.")
                            .Register(*registry_)),
      command_coalesced_(prometheus::BuildCounter()
                             .Name("cmond_command_coalesced_requests_total")
                             .Help("Command requests answered with the output of a run they "
                                   "shared with other requests, not counting the one request "
                                   "per run that executed it.")
                             .Register(*registry_)),
      command_rejections_(prometheus::BuildCounter()
                              .Name("cmond_command_rejections_total")
                              .Help("Command requests refused before running, by command and "
                                    "reason (busy, bad_request, disabled, shutting_down).")
                              .Register(*registry_)),
      commands_running_(prometheus::BuildGauge()
                            .Name("cmond_commands_running")
                            .Help("Command processes running now.")
                            .Register(*registry_)),
      commands_waiting_(prometheus::BuildGauge()
                            .Name("cmond_command_waiting_requests")
                            .Help("Requests waiting for the next run of a coalescing command.")
                            .Register(*registry_)),
      auth_failures_(prometheus::BuildCounter()
                         .Name("cmond_auth_failures_total")
                         .Help("Requests without a valid key (answered 401, or 429 while "
                               "their address is blocked), by reason (missing, malformed, wrong, "
                               "ambiguous).")
                         .Register(*registry_)),
      rate_limited_requests_(prometheus::BuildCounter()
                                 .Name("cmond_rate_limited_requests_total")
                                 .Help("Requests refused with 429 because their client address "
                                       "had too many authentication failures.")
                                 .Register(*registry_)
                                 .Add({})),
      rate_limited_clients_total_(prometheus::BuildCounter()
                                      .Name("cmond_rate_limited_clients_total")
                                      .Help("Times a client address was blocked after too many "
                                            "authentication failures.")
                                      .Register(*registry_)
                                      .Add({})),
      rate_limited_clients_(prometheus::BuildGauge()
                                .Name("cmond_rate_limited_clients")
                                .Help("Client addresses blocked now.")
                                .Register(*registry_)
                                .Add({})),
      http_rejections_(prometheus::BuildCounter()
                           .Name("cmond_http_rejections_total")
                           .Help("Connections and requests the HTTP front end refused or closed "
                                 "before cmond saw a request, by reason.")
                           .Register(*registry_)),
      http_connections_(prometheus::BuildGauge()
                            .Name("cmond_http_connections")
                            .Help("Client connections open now.")
                            .Register(*registry_)
                            .Add({})) {
    prometheus::BuildGauge()
        .Name("cmond_build_info")
        .Help("Always 1; the version label tells the build.")
        .Register(*registry_)
        .Add({{"version", CMOND_VERSION}})
        .Set(1);
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    prometheus::BuildGauge()
        .Name("cmond_start_time_seconds")
        .Help("Start time of this cmond process image, in seconds since the Unix epoch.")
        .Register(*registry_)
        .Add({})
        .Set(std::chrono::duration<double>(now).count());
    for (const char* reason : {"missing", "malformed", "wrong", "ambiguous"}) {
        auth_failures_.Add({{"reason", reason}}); // present at 0 from the start
    }
    for (const std::string_view reason : cmon::front::kRejectionReasons) {
        http_rejections_.Add({{"reason", str(reason)}});
    }
}

void Metrics::http_rejected(std::string_view reason) {
    http_rejections_.Add({{"reason", str(reason)}}).Increment();
}

void Metrics::set_connections(std::size_t n) {
    http_connections_.Set(static_cast<double>(n));
}

void Metrics::request(std::string_view route, int code, double seconds) {
    requests_.Add({{"route", str(route)}, {"code", std::to_string(code)}}).Increment();
    request_duration_.Add({{"route", str(route)}}, kRequestBuckets).Observe(seconds);
}

void Metrics::command_run(std::string_view command, std::string_view result, double seconds) {
    command_runs_.Add({{"command", str(command)}, {"result", str(result)}}).Increment();
    command_duration_.Add({{"command", str(command)}}, kCommandBuckets).Observe(seconds);
}

void Metrics::command_coalesced(std::string_view command) {
    command_coalesced_.Add({{"command", str(command)}}).Increment();
}

void Metrics::command_rejected(std::string_view command, std::string_view reason) {
    command_rejections_.Add({{"command", str(command)}, {"reason", str(reason)}}).Increment();
}

void Metrics::command_started(std::string_view command) {
    commands_running_.Add({{"command", str(command)}}).Increment();
}

void Metrics::command_finished(std::string_view command) {
    commands_running_.Add({{"command", str(command)}}).Decrement();
}

void Metrics::set_waiting(std::string_view command, std::size_t n) {
    commands_waiting_.Add({{"command", str(command)}}).Set(static_cast<double>(n));
}

void Metrics::auth_failure(std::string_view reason) {
    auth_failures_.Add({{"reason", str(reason)}}).Increment();
}

void Metrics::rate_limited_request() {
    rate_limited_requests_.Increment();
}

void Metrics::client_blocked() {
    rate_limited_clients_total_.Increment();
}

void Metrics::set_blocked_clients(std::size_t n) {
    rate_limited_clients_.Set(static_cast<double>(n));
}

void Metrics::add_collectable(std::shared_ptr<prometheus::Collectable> collectable) {
    std::lock_guard lock(extra_mutex_);
    extra_.push_back(std::move(collectable));
}

std::string Metrics::render() const {
    auto families = registry_->Collect();
    std::vector<std::shared_ptr<prometheus::Collectable>> extra;
    {
        std::lock_guard lock(extra_mutex_);
        extra = extra_;
    }
    // Outside the lock: collectables are thread-safe, and concurrent scrapes must not queue
    // behind one another's stats-page reads.
    for (const auto& c : extra) {
        auto more = c->Collect();
        families.insert(families.end(), std::make_move_iterator(more.begin()),
                        std::make_move_iterator(more.end()));
    }
    return prometheus::TextSerializer().Serialize(families);
}

} // namespace cmond
