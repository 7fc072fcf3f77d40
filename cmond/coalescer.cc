// SPDX-License-Identifier: MIT
// Shared runs of read-only commands; see coalescer.h.
#include "coalescer.h"

namespace cmond {

Coalescer::Outcome Coalescer::run(const std::string& key,
                                  const std::function<RunResult()>& execute) {
    std::unique_lock lock(mutex_);
    Group& group = groups_[key];
    if (!group.current) {
        // Nothing in progress: this request starts a run now.
        auto run = std::make_shared<Run>();
        run->claimed = true;
        run->sharers = 1;
        group.current = run;
        return execute_run(key, run, lock, execute);
    }
    // A run is in progress and started before this request arrived: wait for the next one.
    if (!group.next) {
        group.next = std::make_shared<Run>();
    }
    const std::shared_ptr<Run> mine = group.next;
    ++mine->sharers;
    // `group` stays valid: the map entry is erased only when no run is current, and `mine` is
    // either current or next until it is done.
    cv_.wait(lock, [&] { return mine->done || (group.current == mine && !mine->claimed); });
    if (!mine->done) {
        mine->claimed = true; // the first waiter to wake executes it for everyone
        return execute_run(key, mine, lock, execute);
    }
    return {mine->result, mine->sharers, false};
}

Coalescer::Outcome Coalescer::execute_run(const std::string& key, const std::shared_ptr<Run>& run,
                                          std::unique_lock<std::mutex>& lock,
                                          const std::function<RunResult()>& execute) {
    lock.unlock();
    RunResult result;
    try {
        result = execute();
    } catch (const std::exception& e) {
        result = RunResult{};
        result.error = std::string("internal error: ") + e.what();
    } catch (...) {
        result = RunResult{};
        result.error = "internal error";
    }
    lock.lock();
    run->result = std::move(result);
    run->done = true;
    Group& group = groups_[key];
    group.current = std::move(group.next); // may be empty
    group.next.reset();
    const bool idle = !group.current;
    Outcome out{run->result, run->sharers, true};
    if (idle) {
        groups_.erase(key);
    }
    lock.unlock();
    cv_.notify_all();
    return out;
}

std::size_t Coalescer::waiting() const {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (const auto& [key, group] : groups_) {
        if (group.next) {
            n += group.next->sharers;
        }
        if (group.current && !group.current->claimed) {
            n += group.current->sharers;
        }
    }
    return n;
}

} // namespace cmond
