// SPDX-License-Identifier: MIT
// Mutex owners across fork (lock.h): in a child, a lock held by a thread the child does not have
// is released by the fork handler or taken over by the next thread that locks it; a lock held
// by the forking thread itself (a fork from a signal handler inside a critical section) is left
// to it. Each child is bounded (alarm): a lock that waits for a lost holder is a failure, not a
// stuck test.
#include "lock.h"

#include <doctest/doctest.h>

#include <atomic>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using arena::Mutex;
namespace lock_ids = arena::lock_ids;

namespace {

/// Runs f in a fork child, after lock_ids::note_fork_child as libarena's fork handler does. Its
/// result, or -1 when it did not finish within 10 s.
template <class F>
int in_child(F f) {
    const pid_t pid = fork();
    if (pid == 0) {
        alarm(10);
        lock_ids::note_fork_child();
        _exit(f());
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// A thread that holds `m` until released.
class Holder {
public:
    explicit Holder(Mutex& m)
        : t_([this, &m] {
              id_ = lock_ids::self();
              m.lock();
              step_ = 1;
              while (step_.load() != 2) {
              }
              m.unlock();
          }) {
        while (step_.load() != 1) {
        }
    }
    ~Holder() {
        step_ = 2;
        t_.join();
    }
    uint32_t id() const { return id_; }

private:
    std::atomic<int> step_{0};
    uint32_t id_ = 0;
    std::thread t_;
};

} // namespace

TEST_CASE("lock ids are per thread, never 0, and not lost in a process that never forked") {
    const uint32_t me = lock_ids::self();
    uint32_t other = 0;
    std::thread([&other] { other = lock_ids::self(); }).join();
    CHECK(me != 0);
    CHECK(other != 0);
    CHECK(other != me);
    CHECK(me == lock_ids::self());
}

TEST_CASE("fork child: another thread's lock is released, the forking thread's is kept") {
    Mutex other, mine;
    Holder holder(other);
    mine.lock();
    const uint32_t parent_thread = holder.id();
    const int code = in_child([&] {
        if (!lock_ids::lost(parent_thread) || lock_ids::lost(lock_ids::self()))
            return 1;
        if (mine.release_if_orphaned() || !mine.held_by_self())
            return 2;
        if (!other.release_if_orphaned())
            return 3;
        if (other.lock()) // free now: an ordinary lock
            return 4;
        other.unlock();
        mine.unlock();
        return 0;
    });
    mine.unlock();
    CHECK(code == 0);
}

TEST_CASE("fork child: a lock whose holder is gone is taken over by the next thread to lock it") {
    Mutex m;
    Holder holder(m);
    const int code = in_child([&] {
        // A thread made in the child: its id is above every id of the parent.
        bool taken_over = false;
        uint32_t id = 0;
        std::thread([&] {
            id = lock_ids::self();
            taken_over = m.lock();
            m.unlock();
        }).join();
        if (!taken_over || lock_ids::lost(id))
            return 1;
        if (m.lock()) // now an ordinary lock
            return 2;
        // Held by a live thread of the child: waited for, not taken over.
        std::atomic<int> step{0};
        std::thread t([&] {
            step = 1;
            const bool took = m.lock();
            m.unlock();
            step = took ? 3 : 2;
        });
        while (step.load() != 1) {
        }
        usleep(20000);
        const bool waited = step.load() == 1;
        m.unlock();
        t.join();
        return waited && step.load() == 2 ? 0 : 3;
    });
    CHECK(code == 0);
}
