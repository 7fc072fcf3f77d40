// SPDX-License-Identifier: MIT
// Heap profiles from outside a process (profile_page.h; issue 16): read a process's profile
// region under the stats page's rules, resolve its frames to functions, files and lines in the
// reader (never in the profiled process), and write it as a table, JSON, pprof or folded stacks.
// Shared by arena-prof and cmond.
//
// Thread-safety: the functions keep no state but a Symbolizer's own; call them from any thread.
#pragma once

#include "reader.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace arena::client::profile {

/// One call stack's samples, as the reading protocol of profile_page.h takes them.
struct Stack {
    std::vector<uint64_t> frames; // return addresses, innermost first; empty for slot 0
                                  // (samples whose stack found no slot: "other stacks")
    uint64_t alloc_samples = 0;
    double alloc_objects = 0; // estimated objects allocated (scaled back to units)
    uint64_t alloc_bytes = 0; // estimated bytes allocated
    uint64_t free_samples = 0;
    double free_objects = 0;
    uint64_t free_bytes = 0;

    uint64_t live_bytes() const { return alloc_bytes - free_bytes; }
    double live_objects() const { return alloc_objects - free_objects; }
    uint64_t live_samples() const { return alloc_samples - free_samples; }
};

/// A process's profile at one moment.
struct Profile {
    int pid = 0;
    std::string comm;
    bool on = false;   // sampling now
    uint64_t rate = 0; // mean bytes between samples, last in force (1: every allocation)
    uint64_t started_unix_ns = 0, stopped_unix_ns = 0;
    uint64_t samples = 0, sampled_bytes = 0, stacks_used = 0, overflow = 0, dropped = 0,
             unmatched = 0;
    std::vector<Stack> stacks; // slots with any sample, slot 0's (if any) first
};

enum class Error {
    None,
    NoPage,    // no valid stats page for the pid (detail says why: reader.h's Skip)
    NoProfile, // the page has no profile region: profiling was never turned on
    Io,        // read failed
    BadFile,   // the region's head does not match this version's layout
};

struct ReadResult {
    Error error = Error::None;
    std::string detail; // a sentence for people, empty on success
    bool ok() const { return error == Error::None; }
};

/// Reads the profile of `pid`: its page is found and judged as read_pid does (reader.h), and
/// the region is read from the same open file with pread (bounded; slots failing the protocol's
/// checks are skipped).
ReadResult read_pid(const std::string& base, int pid, const ScanOptions& options, Profile* out);

/// Reads a profile region from an open page file (for tests and read_pid). On success replaces
/// *out (pid 0 and comm empty: the file does not say them); on failure leaves it alone.
ReadResult read_fd(int fd, Profile* out);

/// Asks process `pid` to profile at `rate` bytes (1 .. ARENA_PROFILE_MAX_RATE), or to stop
/// (rate 0): writes control.profile_rate, then increments control.profile_requests (as
/// request_purge_delay does). Served on the process's next allocator slow path.
ControlResult request_profile(const std::string& base, int pid, uint64_t rate,
                              const ScanOptions& options = {});

/// A resolved frame.
struct Frame {
    uint64_t address = 0;       // the return address as recorded
    std::string function;       // demangled; "" when unknown
    std::string file;           // source file, "" when there is no debug information
    int line = 0;               // 0 when unknown
    std::string module;         // path of the object the address is in; "" when none
    uint64_t module_offset = 0; // address - the object's load bias
};

/// Resolves addresses of one live process from its mappings (/proc/<pid>/maps and the files
/// they name, with elfutils' libdw), including dlopen'ed libraries and PIE executables; caches
/// what it resolved. Needs to read /proc/<pid>/maps (the process's owner, or root). Debug
/// information is looked for on this machine only (never from a debuginfod server). It parses
/// the ELF and DWARF of whatever files the process mapped: a reader running as root for another
/// user's process trusts libdw with files that user chose, and the time and memory it takes are
/// those of the debug information (large for large programs). Not thread-safe: one per thread.
class Symbolizer {
public:
    static std::unique_ptr<Symbolizer> for_pid(int pid, std::string* error);
    virtual ~Symbolizer() = default;
    virtual Frame resolve(uint64_t return_address) = 0;
    /// Whether the process has mapped or unmapped files since this Symbolizer was made (a
    /// library dlopen'ed or closed): a new one resolves their addresses.
    virtual bool stale() const { return false; }
};

/// Ways to look (arena-prof, cmond). `sym` may be null: frames stay addresses.
enum class Order { LiveBytes, AllocBytes, AllocObjects };
std::string to_table(const Profile& p, Symbolizer* sym, Order order, size_t top);
std::string to_json(const Profile& p, Symbolizer* sym);  // one schema for arena-prof and cmond
std::string to_pprof(const Profile& p, Symbolizer* sym); // profile.proto, gzip'd
std::string to_folded(const Profile& p, Symbolizer* sym, Order order); // "f1;f2;f3 N" lines

} // namespace arena::client::profile
