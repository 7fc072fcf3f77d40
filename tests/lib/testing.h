// SPDX-License-Identifier: MIT
// Helpers shared by the test programs: re-running the test binary as a child process with its
// own environment (heap errors abort; options are read once per process), a deterministic PRNG,
// and a check that the process really runs on libarena.
#pragma once

#include "process.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace testing {

struct ChildResult {
    bool exited = false; // normal exit
    int code = -1;       // exit code when exited
    int signal = 0;      // terminating signal otherwise
    std::string out;     // stdout
    std::string err;     // stderr
};

/// An entry point a test can run in a fresh process: `test-binary --child=NAME`.
using ChildFn = int (*)();
struct ChildRegistrar {
    ChildRegistrar(const char* name, ChildFn fn);
};
#define ARENA_TEST_CHILD(name)                                                                     \
    static int arena_child_##name();                                                               \
    static const testing::ChildRegistrar arena_child_reg_##name(#name, arena_child_##name);        \
    static int arena_child_##name()

/// Runs the registered child NAME in a new process of this binary with `env` ("K=V") added to
/// the current environment; waits for it and returns its status and output.
ChildResult run_child(const std::string& name, const std::vector<std::string>& env = {});

/// For a test that forks by itself (to change the process, e.g. setrlimit, before the child's
/// preload initialises): in the forked process, adds `env` and becomes this binary's child NAME,
/// as run_child's children do (ARENA_TEST_EXEC_WRAPPER included). Exit status 127 on failure.
[[noreturn]] void exec_child(const std::string& name, const std::vector<std::string>& env = {});

/// A registered child running alongside the test, talking over its stdin/stdout by lines.
/// The destructor kills it (SIGKILL) if it is still running, and reaps it.
class Child {
public:
    Child(const std::string& name, const std::vector<std::string>& env = {});
    ~Child();
    int pid() const { return pid_; }
    /// Next line of the child's stdout, without the newline; "" at EOF or after `timeout_ms`.
    std::string read_line(int timeout_ms = 10000);
    void write_line(const std::string& line);
    /// Closes its stdin and waits for it; returns the exit code, or -signal.
    int wait();

    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

private:
    int pid_ = -1;
    int in_ = -1;    // child's stdin (we write)
    LineReader out_; // child's stdout (we read)
};

/// A child every test binary has, "wait_for_stdin": allocates a block, prints "ready <pid>",
/// and holds the block (and its stats page) until its stdin is closed; exits 0.

/// Called by main() for `--child=NAME`. Returns the exit code.
int run_registered_child(const char* name);

/// True when libarena.so is this process's malloc (preloaded or linked).
bool on_libarena();

/// How many rounds a repeated test runs: `full`, or a quarter of it (at least 1) under the quick
/// setup (meson test --setup=quick sets ARENA_TEST_QUICK=1; children inherit it).
int rounds(int full);

/// The number in environment variable `name` (a test's size knob), or `def` when it is unset.
size_t env_or(const char* name, size_t def);

/// splitmix64: deterministic and good enough for test workloads.
inline uint64_t next_random(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/// Resident set size of this process in bytes (/proc/self/statm).
size_t rss_bytes();

/// Number of times `needle` occurs in `hay`.
size_t count_occurrences(const std::string& hay, const std::string& needle);

/// Gives the calling thread a heap of its own (one malloc and free), so that libarena batches
/// its remote frees (a thread without a heap publishes each remote free at once).
void own_heap();

/// Whether the calling thread gets block p back within `tries` mallocs of n bytes (all freed
/// again afterwards): an owner collects remote frees when its slab runs out, and hands out the
/// lowest free slot first.
bool comes_back(void* p, size_t n, int tries = 5000);

/// Runs `work` on a new thread with a heap of its own (own_heap), then keeps that thread (and
/// its heap, with any remote frees it holds back) alive and idle until this object is
/// destroyed. The constructor returns once `work` is done; the destructor lets the thread exit
/// (publishing what it held back) and joins it.
class IdleThread {
public:
    explicit IdleThread(std::function<void()> work);
    ~IdleThread();
    IdleThread(const IdleThread&) = delete;
    IdleThread& operator=(const IdleThread&) = delete;

private:
    std::atomic<int> step_{0}; // 1: work done; 2: may exit
    std::thread thread_;
};

} // namespace testing
