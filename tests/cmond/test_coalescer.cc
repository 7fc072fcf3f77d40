// SPDX-License-Identifier: MIT
// The Coalescer on its own, with runs that are functions under the test's control: who runs,
// who waits, who gets which result, and that nothing hangs when a run throws.
#include "coalescer.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace cmond;
using namespace std::chrono_literals;

namespace {

// A run function that blocks until released, and numbers the runs it made.
class Gate {
public:
    RunResult run() {
        std::unique_lock lock(mutex_);
        const int id = ++started_;
        cv_.notify_all();
        cv_.wait(lock, [&] { return released_ >= id; });
        RunResult r;
        r.outcome = RunResult::Outcome::Exited;
        r.exit_code = 0;
        r.output = "run " + std::to_string(id);
        return r;
    }
    void release_one() {
        std::lock_guard lock(mutex_);
        ++released_;
        cv_.notify_all();
    }
    bool wait_started(int n) {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, 10s, [&] { return started_ >= n; });
    }
    int started() {
        std::lock_guard lock(mutex_);
        return started_;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    int started_ = 0;
    int released_ = 0;
};

bool wait_for_waiting(const Coalescer& c, std::size_t n) {
    for (int i = 0; i < 1000; ++i) {
        if (c.waiting() == n) {
            return true;
        }
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

} // namespace

TEST_SUITE("coalescer") {

    TEST_CASE("an idle key runs at once; requests arriving meanwhile share the next run") {
        Coalescer c;
        Gate gate;
        Coalescer::Outcome first;
        std::thread t1([&] { first = c.run("k", [&] { return gate.run(); }); });
        REQUIRE(gate.wait_started(1));

        std::vector<Coalescer::Outcome> later(3);
        std::vector<std::thread> ts;
        for (auto& o : later) {
            ts.emplace_back([&] { o = c.run("k", [&] { return gate.run(); }); });
        }
        REQUIRE(wait_for_waiting(c, 3));
        CHECK(gate.started() == 1); // nobody started a second process meanwhile
        gate.release_one();
        t1.join();
        CHECK(first.result.output == "run 1");
        CHECK(first.shared_by == 1);
        CHECK(first.ran_here);

        REQUIRE(gate.wait_started(2));
        gate.release_one();
        for (auto& t : ts) {
            t.join();
        }
        int executed = 0;
        for (const auto& o : later) {
            CHECK(o.result.output == "run 2");
            CHECK(o.shared_by == 3);
            executed += o.ran_here ? 1 : 0;
        }
        CHECK(executed == 1);
        CHECK(gate.started() == 2);
        CHECK(c.waiting() == 0);
    }

    TEST_CASE("a request arriving during the shared run waits for the one after it") {
        Coalescer c;
        Gate gate;
        Coalescer::Outcome a, b, e;
        std::thread ta([&] { a = c.run("k", [&] { return gate.run(); }); });
        REQUIRE(gate.wait_started(1));
        std::thread tb([&] { b = c.run("k", [&] { return gate.run(); }); });
        REQUIRE(wait_for_waiting(c, 1));
        gate.release_one();
        REQUIRE(gate.wait_started(2)); // b's run is in progress now
        std::thread te([&] { e = c.run("k", [&] { return gate.run(); }); });
        REQUIRE(wait_for_waiting(c, 1));
        gate.release_one();
        REQUIRE(gate.wait_started(3));
        gate.release_one();
        ta.join();
        tb.join();
        te.join();
        CHECK(a.result.output == "run 1");
        CHECK(b.result.output == "run 2");
        CHECK(e.result.output == "run 3");
        CHECK(b.shared_by == 1);
    }

    TEST_CASE("different keys never share and run side by side") {
        Coalescer c;
        Gate gate;
        Coalescer::Outcome x, y;
        std::thread tx([&] { x = c.run("deploy a", [&] { return gate.run(); }); });
        std::thread ty([&] { y = c.run("deploy b", [&] { return gate.run(); }); });
        REQUIRE(gate.wait_started(2)); // both running at once
        gate.release_one();
        gate.release_one();
        tx.join();
        ty.join();
        CHECK(x.shared_by == 1);
        CHECK(y.shared_by == 1);
        CHECK(x.result.output != y.result.output);
    }

    TEST_CASE("a run that throws ends as a failed start for everyone sharing it") {
        Coalescer c;
        Gate gate;
        std::thread t1([&] { c.run("k", [&] { return gate.run(); }); });
        REQUIRE(gate.wait_started(1));
        std::vector<Coalescer::Outcome> later(2);
        std::vector<std::thread> ts;
        for (auto& o : later) {
            ts.emplace_back([&] {
                o = c.run("k", []() -> RunResult { throw std::runtime_error("no memory"); });
            });
        }
        REQUIRE(wait_for_waiting(c, 2));
        gate.release_one();
        t1.join();
        for (auto& t : ts) {
            t.join();
        }
        for (const auto& o : later) {
            CHECK(o.result.outcome == RunResult::Outcome::SpawnFailed);
            CHECK(o.result.error == "internal error: no memory");
            CHECK(o.shared_by == 2);
        }
        // The key is usable again afterwards.
        const auto again = c.run("k", [] {
            RunResult r;
            r.outcome = RunResult::Outcome::Exited;
            r.exit_code = 0;
            return r;
        });
        CHECK(again.result.ok());
        CHECK(again.shared_by == 1);
    }

} // TEST_SUITE
