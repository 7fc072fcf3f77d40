// SPDX-License-Identifier: MIT
// Request coalescing for read-only commands (`coalesce = true`): requests with the same key (the
// command's expanded argv) share runs, and no answer ever comes from a process that started
// before its request arrived.
//
// Per key there is at most one run in progress (`current`) and at most one run waiting to start
// (`next`):
//   - no run in progress: the request starts one at once, on its own thread;
//   - a run in progress: the request joins `next` (creating it if needed) and waits;
//   - when the run in progress ends, its requests get its result, `next` becomes the run in
//     progress and one of its waiting requests' threads executes it.
// So a request waits at most for the end of the run in progress plus one whole run of its own,
// and every request waiting for a run gets that run's result (the same output, exit code and
// duration). Admission (the concurrency limit) is the caller's business: every request that
// enters here, waiting or running, holds one of the command's slots.
//
// Thread-safe. A run whose function throws ends as a SpawnFailed result for all its requests,
// so waiters never hang.
#pragma once

#include "runner.h"

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace cmond {

class Coalescer {
public:
    struct Outcome {
        RunResult result;       // of the run this request got
        unsigned shared_by = 1; // requests that got this run's result (>= 1)
        bool ran_here = false;  // this request's thread executed the run
    };

    /// Runs `execute` for `key`, or waits for the next run of `key` and takes its result; see
    /// the file comment. Blocks until this request's run has ended.
    Outcome run(const std::string& key, const std::function<RunResult()>& execute);

    /// Requests waiting for a run to start, over every key (for tests and diagnostics).
    std::size_t waiting() const;

private:
    struct Run {
        bool claimed = false; // a thread executes it
        bool done = false;    // result is final
        unsigned sharers = 0; // requests that will get its result; final once it is `current`
        RunResult result;
    };
    struct Group {
        std::shared_ptr<Run> current; // in progress, or promoted and about to be claimed
        std::shared_ptr<Run> next;    // gathering requests until `current` ends
    };

    Outcome execute_run(const std::string& key, const std::shared_ptr<Run>& run,
                        std::unique_lock<std::mutex>& lock,
                        const std::function<RunResult()>& execute);

    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::map<std::string, Group> groups_; // only keys with a run in progress or promoted
};

} // namespace cmond
