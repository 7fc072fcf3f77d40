// SPDX-License-Identifier: MIT
// The stats client's reader: every libarena stats page under a base directory (stats_page.h,
// <base>/<uid>/<pid>), read so that nobody who can write there can hurt the reader, and the
// control requests readers send to a process. Shared by arena-exporter, arena-stat and cmond.
//
// What it accepts (SECURITY.md, "readers that cannot be hurt"): a user directory that is a real
// directory (not a symlink) writable by its owner only; in it, a page that is a regular file with
// one link, owned by the directory's owner, named by a canonical decimal pid equal to the pid
// inside it; whose process is alive in `procfs` and started no later than the page was made, has
// the page's owner
// among its uids (or the page is root's), and has not exec'd since it made the page. It reads with
// pread into bounded buffers, never mmap, so a page truncated or a tmpfs filled under it cannot
// raise SIGBUS. One page per pid. A scan stops at a cap on pages, directory entries and time, and
// counts everything it did not report by reason. Pages of dead processes are removed when the
// reader may (its own user's, or as root), after checking that the file is still the one judged.
//
// Thread-safety: the functions keep no state; call them from any thread.
#pragma once

#include "arena/stats_snapshot.h"

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace arena::client {

/// Why an entry of the stats directory was not reported.
enum class Skip : unsigned {
    Foreign,        // not a page: a name that is not a pid, not a regular file, a symlink,
                    // more than one link, or a user directory that is not a directory or is
                    // not named by a uid
    Unreadable,     // open, fstat or pread failed (permissions, vanished meanwhile)
    UnsafeDir,      // a user directory others may write (group or world writable)
    Truncated,      // shorter than a page
    BadMagic,       // not a stats page
    BadVersion,     // a page of another ABI version (an older libarena)
    BadSize,        // sizes or counts that do not match this version's layout
    NotReady,       // being made: the READY flag is not set
    Forged,         // the pid inside is not the file's name
    ForeignOwner,   // owned by someone else than its directory's owner, or (unless root's) than
                    // the process it names; or a user directory not owned by the uid it is
                    // named by
    Duplicate,      // a second valid page for a pid already reported
    Dead,           // stale: no such process
    PidReused,      // stale: the pid belongs to a process with another start time
    Exec,           // stale: the process exec'd since (into a program not on libarena, or
                    // one with ARENA_STATS=0): nobody writes the page
    OtherNamespace, // written in another PID namespace: its pid cannot be checked here
    Limit,          // not examined: the scan reached its cap on pages, entries or time
    Count
};

/// Prometheus-label-friendly name: "foreign", "unreadable", "unsafe_dir", "truncated", ...
const char* skip_name(Skip why);

/// One process's page, validated, at one moment.
struct Process {
    snapshot::Snapshot snap; // the counters (stats_snapshot.h)
    int pid = 0;
    uid_t uid = 0;           // the page's owner
    uint64_t start_time = 0; // the process's, in clock ticks after boot (/proc/<pid>/stat
                             // field 22; the page's head.start_time is when the page was made)
    std::string comm;        // from /proc/<pid>/stat (current; the page's copy may be older)
    std::string cmdline;     // from the page
    std::string path;        // <base>/<uid dir>/<pid>

    uint64_t event(arena_stats_event e) const { return snap.event(e); }
    uint64_t gauge(arena_stats_gauge g) const { return snap.gauge(g); }
    uint64_t live_bytes() const { return snap.live_bytes(); }
    uint64_t live_blocks() const { return snap.live_blocks(); }
    uint64_t created_unix_ns() const { return snap.head.created_unix_ns; }
    const arena_stats_control& control() const { return snap.head.control; }
};

struct ScanOptions {
    std::string procfs = "/proc";       // where processes are checked (node_exporter's
                                        // --path.procfs: a host's /proc mounted elsewhere)
    bool remove_stale = true;           // delete pages of dead processes when allowed to
    size_t max_pages = 4096;            // valid pages reported at most
    size_t max_entries = 200000;        // directory entries examined at most
    size_t max_entries_per_dir = 32768; // ... in one user directory: a user who fills their own
                                        // with junk cannot use up the scan and hide others' pages
    std::chrono::milliseconds deadline{2000}; // time a scan may take
};

struct Scan {
    std::vector<Process> processes;                      // sorted by pid, one per pid
    std::array<uint64_t, size_t(Skip::Count)> skipped{}; // entries not reported, by reason
    uint64_t removed = 0;                                // stale pages deleted by this scan
    bool truncated = false;                              // a cap ended the scan early
    std::string error;                                   // the base could not be read
};

/// Reads every page under `base`. Never throws for anything found on disk. Another user's
/// directory that the reader may not open (EACCES: normal when not root) is passed over and
/// counted nowhere. A procfs that cannot be opened is an error too (nothing is judged or removed).
Scan scan(const std::string& base, const ScanOptions& options = {});

/// The page of `pid`, looked for in the directories of the process's uids and root's. On
/// failure returns nullopt and sets *why: Dead when there is no such process, Foreign when it
/// has no page, Unreadable when a directory it may have its page in cannot be opened (another
/// user's), or why its page was refused.
std::optional<Process> read_pid(const std::string& base, int pid, const ScanOptions& options,
                                Skip* why);

/// Why a control request was not made.
enum class ControlError {
    None,       // done
    Invalid,    // a bad argument (pid, delay out of range)
    NoPage,     // no valid stats page for the pid, or no such process (the detail says why)
    Permission, // the page (or the directory it would be in) belongs to another user
    Stale,      // the page's process is gone
    Io,         // anything else
};

struct ControlResult {
    ControlError error = ControlError::None;
    std::string detail;    // a sentence for people, empty on success
    uint64_t requests = 0; // the request counter after ours (trim or purge)
    uint64_t served = 0;   // the allocator's served counter when we wrote
    bool ok() const { return error == ControlError::None; }
};

/// A validated page, open: read_pid's judgement, then the same file opened again and checked to
/// be the inode judged (a page swapped in meanwhile is Stale). For what is read after the page
/// (profile.h's region) and for control requests. Closes its descriptor.
class PageFile {
public:
    PageFile() = default;
    PageFile(const PageFile&) = delete;
    PageFile& operator=(const PageFile&) = delete;
    PageFile(PageFile&& o) noexcept { *this = std::move(o); }
    PageFile& operator=(PageFile&& o) noexcept;
    ~PageFile();

    int fd() const { return fd_; }
    void reset(int fd = -1);

    Process process; // the page as judged

private:
    int fd_ = -1;
};

/// Opens the page of `pid` for reading, or for writing (`writable`: its owner or root only).
/// On failure leaves *out alone and says why, as a control request would (NoPage, Permission,
/// Stale, Io; Invalid for a pid <= 0).
ControlResult open_page(const std::string& base, int pid, const ScanOptions& options, bool writable,
                        PageFile* out);

/// One control request (stats_page.h, control): the offsets of its fields in
/// arena_stats_control. The value (if any) is written first, then the request counter is
/// incremented; the result has the counter after ours and the served counter as read.
struct ControlRequest {
    std::optional<size_t> value_field; // the request's argument, 8 bytes
    uint64_t value = 0;
    size_t requests_field = 0;
    size_t served_field = 0;
};

/// Validates the page of `pid` as read_pid does and makes `request` with pwrite.
ControlResult request_control(const std::string& base, int pid, const ScanOptions& options,
                              const ControlRequest& request);

/// Asks process `pid` to trim (malloc_trim(0)) on its next allocator slow path: validates the
/// page as read_pid does, then increments control.trim_requests with pwrite.
ControlResult request_trim(const std::string& base, int pid, const ScanOptions& options = {});

/// Asks process `pid` to use a new purge delay (-1 .. 3600000 ms): writes
/// control.purge_delay_ms, then increments control.purge_requests.
ControlResult request_purge_delay(const std::string& base, int pid, int64_t ms,
                                  const ScanOptions& options = {});

/// The uids of process `pid` in `procfs` (real, effective, saved, filesystem: the Uid: line of
/// its status file), or nullopt when it cannot be read (no such process).
std::optional<std::array<uid_t, 4>> process_uids(const std::string& procfs, int pid);

/// $ARENA_STATS_DIR, or the default base directory.
std::string default_dir();

} // namespace arena::client
