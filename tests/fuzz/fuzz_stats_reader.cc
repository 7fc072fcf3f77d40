// SPDX-License-Identifier: MIT
// The stats client's reader (libarena/client/reader.h) on a hostile page: the input is written
// as the page file <base>/<uid>/<pid> of a process that a fake procfs shows alive, exactly where
// a writer (or anyone who can write the user's directory) would put it, and the reader's three
// users then consume what it accepted: read_pid and the JSON of cmond's /arena/<pid> and
// arena-stat --json, and a scan through the Prometheus collector of arena-exporter and cmond's
// /metrics, serialized as exposition text. Nothing on disk may make any of them crash, throw or
// read outside a buffer, and what is accepted must be a page this version can read.
//
// The pid is fixed (kPid): an input is one page, and inputs made from a real page keep its
// fields apart from the pid (corpus/stats_reader/*). Bytes after the first 32 KiB go into the
// fake /proc/<pid>/stat as the process's comm (the kernel's 15 bytes at most, any bytes but
// NUL), which the reader also parses and reports.
#include "collector.h"
#include "fake_page.h"
#include "json.h"
#include "reader.h"
#include "temp_dir.h"

#include <prometheus/text_serializer.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace {

constexpr int kPid = 4242;
constexpr uint64_t kStartTime = 12345; // the fake process's; a page made before is stale

std::string g_base;   // <tmp>/stats
std::string g_procfs; // <tmp>/proc
std::string g_page;   // <base>/<uid>/<pid>

[[noreturn]] void fail(const char* what) {
    fprintf(stderr, "fuzz_stats_reader: %s\n", what);
    abort();
}

void write_all(const std::string& path, const uint8_t* data, size_t size) {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        fail("cannot write the page file");
    while (size > 0) {
        const ssize_t w = write(fd, data, size);
        if (w <= 0)
            fail("cannot write the page file");
        data += w;
        size -= static_cast<size_t>(w);
    }
    close(fd);
}

/// What the reader accepted must be a page of this version, for our pid.
void check_accepted(const arena::client::Process& p) {
    const arena_stats_head& h = p.snap.head;
    if (p.pid != kPid || h.pid != kPid || h.magic != ARENA_STATS_MAGIC ||
        h.version != ARENA_STATS_VERSION || h.nclasses > ARENA_STATS_MAX_CLASSES ||
        h.shards_used > ARENA_STATS_SHARDS || (h.flags & ARENA_STATS_READY) == 0)
        fail("accepted a page it should have refused");
    if (p.cmdline.size() >= sizeof h.cmdline)
        fail("cmdline longer than its field");
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    const std::string dir = fuzz::temp_dir("fuzz-stats-reader");
    if (dir.empty())
        fail("mkdtemp");
    g_base = dir + "/stats";
    g_procfs = dir + "/proc";
    // FakePage writes the user directory (and the base) the way a writer makes them.
    g_page = testing::FakePage(kPid).write(g_base);
    if (g_page.empty())
        fail("cannot make the stats directory");
    testing::FakeProc(g_procfs).add(kPid, kStartTime, "fuzz");
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // The comm, from the bytes after the page: what the kernel could show for it.
    std::string comm = "fuzz";
    if (size > sizeof(arena_stats_page)) {
        comm.clear();
        for (size_t i = sizeof(arena_stats_page); i < size && comm.size() < 15; ++i)
            if (data[i] != 0)
                comm += static_cast<char>(data[i]);
    }
    testing::FakeProc(g_procfs).add(kPid, kStartTime, comm);
    // A new file each time: the reader may have removed the last one as stale.
    unlink(g_page.c_str());
    write_all(g_page, data, size);

    arena::client::ScanOptions options;
    options.procfs = g_procfs;
    arena::client::Skip why = arena::client::Skip::Count;
    if (auto p = arena::client::read_pid(g_base, kPid, options, &why)) {
        check_accepted(*p);
        const auto text = arena::client::process_json(*p).dump(
            2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
        const auto summary = arena::client::process_summary_json(*p).dump(
            -1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
        if (text.empty() || summary.empty())
            fail("empty JSON");
    } else if (why == arena::client::Skip::Count) {
        fail("read_pid refused without a reason");
    }

    // The same page through a scan, as arena-exporter and cmond's /metrics see it.
    write_all(g_page, data, size); // again, if it was removed as stale
    for (const auto g : {arena::client::GroupBy::Pid, arena::client::GroupBy::Comm}) {
        const arena::client::ArenaCollector collector(g_base, g, options, "fuzz");
        const std::string text = prometheus::TextSerializer().Serialize(collector.Collect());
        if (text.empty())
            fail("empty exposition");
    }
    return 0;
}
