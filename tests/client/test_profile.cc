// SPDX-License-Identifier: MIT
// The heap profile reader (libarena/client/profile.h) against page files made by hand: a valid
// stats page (testing::FakePage) with a profile region written after it. The reading protocol's
// totals and live counts; slots being written or bad (hash, depth) skipped; heads of another
// layout and files cut short refused without a crash, and so are regions of random bytes;
// profiling requests landing in the page; the formats (table, JSON, folded, pprof read back by
// `go tool pprof` when Go is installed); and the libdw Symbolizer on this very process (built
// with -g and -rdynamic), naming one of its functions and its source file.
#include "common.h"
#include "fake_page.h"
#include "fake_profile.h"
#include "process.h"
#include "profile.h"
#include "testing.h"

#include "arena/profile_page.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <map>
#include <memory>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>
#include <zlib.h>

namespace cl = arena::client;
namespace pr = arena::client::profile;

// The Symbolizer's probes: outside the anonymous namespace so their names are the plain ones.
namespace probe {

__attribute__((noinline)) int known_function(int x) {
    asm volatile("" ::: "memory");
    return x * 3 + 1;
}

/// The return address of its call: a frame in the caller, as the allocator records them.
__attribute__((noinline)) uint64_t return_address() {
    asm volatile("" ::: "memory");
    return reinterpret_cast<uint64_t>(__builtin_return_address(0));
}

constexpr int kCallLine = __LINE__ + 3; // the line the Symbolizer must name

__attribute__((noinline)) uint64_t caller_of_return_address() {
    const uint64_t a = return_address();
    asm volatile("" ::: "memory");
    return a;
}

} // namespace probe

namespace {

using testing::kPid;
using testing::ProfileEnv;
using testing::Region;
using testing::sample_region;
using testing::write_page;

pr::ReadResult read_path(const std::string& path, pr::Profile* out) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const pr::ReadResult r = pr::read_fd(fd, out);
    close(fd);
    return r;
}

/// The path of `program` in $PATH, or "".
std::string in_path(const std::string& program) {
    const char* path = getenv("PATH");
    std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
    size_t start = 0;
    while (start <= dirs.size()) {
        const size_t end = std::min(dirs.find(':', start), dirs.size());
        const std::string candidate = dirs.substr(start, end - start) + "/" + program;
        if (end > start && access(candidate.c_str(), X_OK) == 0)
            return candidate;
        start = end + 1;
    }
    return "";
}

/// Names for the synthetic addresses: a Symbolizer that needs no process.
class FakeSymbolizer : public pr::Symbolizer {
public:
    pr::Frame resolve(uint64_t address) override {
        static const std::map<uint64_t, const char*> kNames = {
            {0x1003, "leaf_alloc"}, {0x1503, "big_alloc"}, {0x2003, "middle"}, {0x3003, "main"}};
        pr::Frame f;
        f.address = address;
        if (const auto it = kNames.find(address); it != kNames.end()) {
            f.function = it->second;
            f.file = "/src/app.cc";
            f.line = static_cast<int>(address >> 8);
            f.module = "/usr/bin/app";
            f.module_offset = address - 0x1000;
        }
        return f;
    }
};

/// sample_region() as read_pid reads it.
pr::Profile sample_profile() {
    ProfileEnv env;
    write_page(env, sample_region());
    pr::Profile p;
    const pr::ReadResult r = pr::read_pid(env.base, kPid, env.options, &p);
    REQUIRE_MESSAGE(r.ok(), r.detail);
    return p;
}

const pr::Stack* find_stack(const pr::Profile& p, uint64_t innermost) {
    for (const pr::Stack& s : p.stacks)
        if (!s.frames.empty() && s.frames[0] == innermost)
            return &s;
    return nullptr;
}

} // namespace

// ---- reading ----

TEST_CASE("read_fd takes the head's counters and every filled slot, live = alloc - free") {
    ProfileEnv env;
    const Region g = sample_region();
    pr::Profile p;
    const pr::ReadResult r = read_path(write_page(env, g), &p);
    REQUIRE(r.ok());
    CHECK(r.detail.empty());
    CHECK(p.on);
    CHECK(p.rate == 4096);
    CHECK(p.started_unix_ns == g.r->head.started_unix_ns);
    CHECK(p.samples == 17);
    CHECK(p.sampled_bytes == 60200);
    CHECK(p.stacks_used == 2);
    CHECK(p.overflow == 2);
    REQUIRE(p.stacks.size() == 3);
    CHECK(p.stacks[0].frames.empty()); // slot 0 first
    CHECK(p.stacks[0].alloc_bytes == 200);
    const pr::Stack* a = find_stack(p, 0x1003);
    REQUIRE(a != nullptr);
    CHECK(a->frames == std::vector<uint64_t>{0x1003, 0x2003, 0x3003});
    CHECK(a->alloc_samples == 10);
    CHECK(a->alloc_objects == doctest::Approx(10.0));
    CHECK(a->live_bytes() == 6000);
    CHECK(a->live_objects() == doctest::Approx(6.0));
    CHECK(a->live_samples() == 6);
    const pr::Stack* b = find_stack(p, 0x1503);
    REQUIRE(b != nullptr);
    CHECK(b->live_bytes() == 40000);
    uint64_t live = 0;
    for (const pr::Stack& s : p.stacks)
        live += s.live_bytes();
    CHECK(live == 200 + 6000 + 40000);
}

TEST_CASE("objects are fixed point: ARENA_PROFILE_OBJECT_SCALE units make one") {
    ProfileEnv env;
    Region g;
    g.add(1, {0x1003}, 1, 100).alloc_objects = ARENA_PROFILE_OBJECT_SCALE * 5 / 2;
    pr::Profile p;
    REQUIRE(read_path(write_page(env, g), &p).ok());
    REQUIRE(p.stacks.size() == 1);
    CHECK(p.stacks[0].alloc_objects == doctest::Approx(2.5));
}

TEST_CASE("slots being written or bad are skipped, the others read") {
    ProfileEnv env;
    Region g = sample_region();
    SUBCASE("hash mismatch") {
        g.add(5, {0x9003}, 3, 300).hash ^= 1;
    }
    SUBCASE("depth 0 with samples (frames not published yet)") {
        g.add(5, {0x9003}, 3, 300).depth = 0;
    }
    SUBCASE("depth past ARENA_PROFILE_DEPTH") {
        arena_profile_stack& s = g.add(5, {0x9003}, 3, 300);
        s.depth = ARENA_PROFILE_DEPTH + 1;
        s.hash = arena_profile_hash(s.frames, ARENA_PROFILE_DEPTH);
    }
    SUBCASE("more freed than allocated: clamped, live 0") {
        arena_profile_stack& s = g.add(5, {0x9003}, 3, 300);
        s.free_samples = 9;
        s.free_bytes = 900;
        s.free_objects = 9 * ARENA_PROFILE_OBJECT_SCALE;
        pr::Profile p;
        REQUIRE(read_path(write_page(env, g), &p).ok());
        const pr::Stack* bad = find_stack(p, 0x9003);
        REQUIRE(bad != nullptr);
        CHECK(bad->live_bytes() == 0);
        CHECK(bad->live_samples() == 0);
        CHECK(bad->live_objects() == doctest::Approx(0.0));
        return;
    }
    pr::Profile p;
    REQUIRE(read_path(write_page(env, g), &p).ok());
    CHECK(p.stacks.size() == 3);
    CHECK(find_stack(p, 0x9003) == nullptr);
}

TEST_CASE("a full-depth stack is read whole") {
    ProfileEnv env;
    Region g;
    std::vector<uint64_t> frames;
    for (uint64_t i = 0; i < ARENA_PROFILE_DEPTH; ++i)
        frames.push_back(0x10000 + i * 16);
    g.add(ARENA_PROFILE_STACKS - 1, frames, 1, 64);
    pr::Profile p;
    REQUIRE(read_path(write_page(env, g), &p).ok());
    REQUIRE(p.stacks.size() == 1);
    CHECK(p.stacks[0].frames == frames);
}

TEST_CASE("a page without a region, or with a head of another layout, is an error") {
    ProfileEnv env;
    Region g = sample_region();
    pr::Profile p;
    p.comm = "untouched";
    SUBCASE("the page only: no profile") {
        const pr::ReadResult r = read_path(testing::FakePage(kPid).write(env.base), &p);
        CHECK(r.error == pr::Error::NoProfile);
        CHECK(!r.detail.empty());
    }
    SUBCASE("part of the head: no profile") {
        CHECK(read_path(write_page(env, g, 100), &p).error == pr::Error::NoProfile);
    }
    SUBCASE("space reserved, head not written yet: no profile") {
        g.r->head.magic = 0;
        CHECK(read_path(write_page(env, g), &p).error == pr::Error::NoProfile);
    }
    SUBCASE("bad magic") {
        g.r->head.magic = ARENA_PROFILE_MAGIC + 1;
        CHECK(read_path(write_page(env, g), &p).error == pr::Error::BadFile);
    }
    SUBCASE("another version") {
        g.r->head.version = ARENA_PROFILE_VERSION + 1;
        const pr::ReadResult r = read_path(write_page(env, g), &p);
        CHECK(r.error == pr::Error::BadFile);
        CHECK(r.detail.find("version") != std::string::npos);
    }
    SUBCASE("header_size") {
        g.r->head.header_size = 512;
        CHECK(read_path(write_page(env, g), &p).error == pr::Error::BadFile);
    }
    SUBCASE("nstacks") {
        g.r->head.nstacks = ARENA_PROFILE_STACKS * 2;
        CHECK(read_path(write_page(env, g), &p).error == pr::Error::BadFile);
    }
    SUBCASE("depth") {
        g.r->head.depth = 64;
        CHECK(read_path(write_page(env, g), &p).error == pr::Error::BadFile);
    }
    SUBCASE("size smaller than the table") {
        g.r->head.size = sizeof(arena_profile_region) - 1;
        CHECK(read_path(write_page(env, g), &p).error == pr::Error::BadFile);
    }
    SUBCASE("the file cut inside the table") {
        CHECK(read_path(write_page(env, g, sizeof(arena_profile_region) / 2), &p).error ==
              pr::Error::BadFile);
    }
    CHECK(p.comm == "untouched"); // a failed read leaves the profile alone
}

TEST_CASE("regions of random bytes never crash read_fd, and what it takes obeys the protocol") {
    ProfileEnv env;
    uint64_t seed = 0x5eed;
    const auto next = [&seed] { return testing::next_random(seed); };
    for (int round = 0; round < 24; ++round) {
        Region g;
        auto* bytes = reinterpret_cast<unsigned char*>(g.r->stacks);
        for (size_t i = 0; i < sizeof g.r->stacks; ++i)
            bytes[i] = static_cast<unsigned char>(next());
        // Some slots valid by construction among the garbage; odd rounds scramble the head too.
        for (int k = 0; k < 8; ++k) {
            const size_t slot = 1 + next() % (ARENA_PROFILE_STACKS - 1);
            std::vector<uint64_t> frames(1 + next() % ARENA_PROFILE_DEPTH);
            for (uint64_t& f : frames)
                f = next();
            g.add(slot, frames, 1 + next() % 100, next(), next(), next());
        }
        if (round % 2 == 1) {
            auto* head = reinterpret_cast<unsigned char*>(&g.r->head);
            for (size_t i = 0; i < sizeof g.r->head; ++i)
                if (next() % 4 == 0)
                    head[i] = static_cast<unsigned char>(next());
        }
        const size_t len =
            round % 3 == 2 ? next() % sizeof(arena_profile_region) : sizeof(arena_profile_region);
        pr::Profile p;
        const pr::ReadResult r = read_path(write_page(env, g, len), &p);
        if (!r.ok())
            continue;
        for (const pr::Stack& s : p.stacks) {
            CHECK(s.frames.size() <= ARENA_PROFILE_DEPTH);
            CHECK(s.free_bytes <= s.alloc_bytes);
            CHECK(s.free_samples <= s.alloc_samples);
            CHECK(s.live_objects() >= 0);
        }
        // The formats survive anything read.
        CHECK(!pr::to_table(p, nullptr, pr::Order::LiveBytes, 10).empty());
        CHECK(!pr::to_json(p, nullptr).empty());
        CHECK(!pr::to_pprof(p, nullptr).empty());
        pr::to_folded(p, nullptr, pr::Order::AllocBytes);
    }
}

TEST_CASE("read_pid reads the region of the page it validated") {
    ProfileEnv env;
    write_page(env, sample_region());
    pr::Profile p;
    const pr::ReadResult r = pr::read_pid(env.base, kPid, env.options, &p);
    REQUIRE(r.ok());
    CHECK(p.pid == kPid);
    CHECK(p.comm == "profiled");
    CHECK(p.stacks.size() == 3);
}

TEST_CASE("read_pid says why it has no profile") {
    ProfileEnv env;
    pr::Profile p;
    SUBCASE("no such process") {
        const pr::ReadResult r = pr::read_pid(env.base, kPid + 1, env.options, &p);
        CHECK(r.error == pr::Error::NoPage);
        CHECK(r.detail.find("no process") != std::string::npos);
    }
    SUBCASE("a process without a page") {
        const pr::ReadResult r = pr::read_pid(env.base, kPid, env.options, &p);
        CHECK(r.error == pr::Error::NoPage);
        CHECK(r.detail.find("no stats page") != std::string::npos);
    }
    SUBCASE("a refused page") {
        testing::FakePage page(kPid);
        page.head().magic = 1;
        page.write(env.base);
        const pr::ReadResult r = pr::read_pid(env.base, kPid, env.options, &p);
        CHECK(r.error == pr::Error::NoPage);
        CHECK(r.detail.find("bad_magic") != std::string::npos);
    }
    SUBCASE("profiling never turned on: how to turn it on") {
        testing::FakePage(kPid).write(env.base);
        const pr::ReadResult r = pr::read_pid(env.base, kPid, env.options, &p);
        CHECK(r.error == pr::Error::NoProfile);
        CHECK(r.detail.find("ARENA_PROFILE=1") != std::string::npos);
        CHECK(r.detail.find("--on " + std::to_string(kPid)) != std::string::npos);
    }
}

// ---- requests ----

TEST_CASE("request_profile writes the rate, then bumps the request counter") {
    ProfileEnv env;
    testing::FakePage page(kPid);
    page.head().control.profile_requests = 3;
    page.head().control.profile_served = 3;
    const std::string path = page.write(env.base);
    const auto control = [&] { return testing::control_of(path); };
    cl::ControlResult r = pr::request_profile(env.base, kPid, 65536, env.options);
    CHECK(r.ok());
    CHECK(r.requests == 4);
    CHECK(r.served == 3);
    CHECK(control().profile_rate == 65536);
    CHECK(control().profile_requests == 4);
    r = pr::request_profile(env.base, kPid, 0, env.options);
    CHECK(r.ok());
    CHECK(control().profile_rate == 0);
    CHECK(control().profile_requests == 5);
    CHECK(pr::request_profile(env.base, kPid, 1, env.options).ok());
    CHECK(pr::request_profile(env.base, kPid, ARENA_PROFILE_MAX_RATE, env.options).ok());
    CHECK(control().profile_rate == ARENA_PROFILE_MAX_RATE);
    // Nothing else in the control area moved.
    CHECK(control().trim_requests == page.head().control.trim_requests);
    CHECK(control().purge_requests == page.head().control.purge_requests);

    r = pr::request_profile(env.base, kPid, ARENA_PROFILE_MAX_RATE + 1, env.options);
    CHECK(r.error == cl::ControlError::Invalid);
    CHECK(r.detail.find(std::to_string(ARENA_PROFILE_MAX_RATE + 1)) != std::string::npos);
    CHECK(control().profile_requests == 7);
    CHECK(pr::request_profile(env.base, kPid + 1, 1, env.options).error ==
          cl::ControlError::NoPage);
    CHECK(pr::request_profile(env.base, -1, 1, env.options).error == cl::ControlError::Invalid);
}

// ---- formats ----

TEST_CASE("the table shows the top stacks by the order asked, with functions and callers") {
    const pr::Profile p = sample_profile();
    FakeSymbolizer sym;
    const std::string live = pr::to_table(p, &sym, pr::Order::LiveBytes, 2);
    INFO(live);
    CHECK(live.find("pid 4243 (profiled)") != std::string::npos);
    CHECK(live.find("profiling on") != std::string::npos);
    CHECK(live.find("2 of 3") != std::string::npos);
    CHECK(live.find("big_alloc (app.cc:21)") < live.find("leaf_alloc (app.cc:16)"));
    CHECK(live.find("<- middle <- main") != std::string::npos);
    CHECK(live.find("[other stacks]") == std::string::npos); // third: not in the top 2
    const std::string count = pr::to_table(p, &sym, pr::Order::AllocObjects, 0);
    CHECK(count.find("leaf_alloc") < count.find("big_alloc"));
    CHECK(count.find("[other stacks]") != std::string::npos);
    // Without a Symbolizer, frames stay addresses.
    CHECK(pr::to_table(p, nullptr, pr::Order::LiveBytes, 0).find("0x1503") != std::string::npos);
}

TEST_CASE("the JSON has the schema, stacks by live bytes, frames resolved") {
    const pr::Profile p = sample_profile();
    FakeSymbolizer sym;
    const nlohmann::json j = nlohmann::json::parse(pr::to_json(p, &sym));
    CHECK(j["pid"] == kPid);
    CHECK(j["comm"] == "profiled");
    CHECK(j["on"] == true);
    CHECK(j["rate"] == 4096);
    CHECK(j["samples"] == 17);
    CHECK(j["overflow"] == 2);
    for (const char* key :
         {"started_unix_ns", "sampled_bytes", "stacks_used", "dropped", "unmatched", "stacks"})
        CHECK(j.contains(key));
    REQUIRE(j["stacks"].size() == 3);
    CHECK(j["stacks"][0]["live_bytes"] == 40000);
    CHECK(j["stacks"][1]["live_bytes"] == 6000);
    CHECK(j["stacks"][1]["live_objects"] == 6);
    CHECK(j["stacks"][1]["alloc_objects"] == 10);
    CHECK(j["stacks"][1]["alloc_samples"] == 10);
    CHECK(j["stacks"][1]["free_samples"] == 4);
    const nlohmann::json& f = j["stacks"][1]["frames"][0];
    CHECK(f["address"] == "0x1003");
    CHECK(f["function"] == "leaf_alloc");
    CHECK(f["file"] == "/src/app.cc");
    CHECK(f["line"] == 16);
    CHECK(f["module"] == "/usr/bin/app");
    CHECK(j["stacks"][2]["frames"].empty());
}

TEST_CASE("folded stacks are outer;...;inner VALUE, by the order asked") {
    ProfileEnv env;
    pr::Profile p;
    REQUIRE(read_path(write_page(env, sample_region()), &p).ok());
    FakeSymbolizer sym;
    CHECK(pr::to_folded(p, &sym, pr::Order::LiveBytes) ==
          "main;big_alloc 40000\nmain;middle;leaf_alloc 6000\n[other stacks] 200\n");
    CHECK(pr::to_folded(p, &sym, pr::Order::AllocObjects) ==
          "main;middle;leaf_alloc 10\nmain;big_alloc 5\n[other stacks] 2\n");
}

TEST_CASE("go tool pprof reads the pprof output and names the top function") {
    const std::string go = in_path("go");
    if (go.empty()) {
        MESSAGE("skipped: go is not installed (golang-go)");
        return;
    }
    ProfileEnv env;
    pr::Profile p;
    REQUIRE(read_path(write_page(env, sample_region()), &p).ok());
    FakeSymbolizer sym;
    const std::string file = env.tmp.write("heap.pb.gz", pr::to_pprof(p, &sym));
    const std::string home = env.tmp.path();
    const testing::RunResult r = testing::run(
        {go, "tool", "pprof", "-top", "-sample_index=inuse_space", file},
        {.env = {"HOME=" + home, "GOCACHE=" + home + "/gocache", "GOPATH=" + home + "/go",
                 "GOTOOLCHAIN=local", "GOFLAGS=", "PPROF_TMPDIR=" + home},
         .limit = std::chrono::seconds(60)});
    INFO(r.out);
    INFO(r.err);
    REQUIRE(r.status == 0);
    // The first row after the header is the largest in-use stack's leaf.
    const size_t header = r.out.find("flat%");
    REQUIRE(header != std::string::npos);
    const size_t big = r.out.find("big_alloc", header);
    const size_t leaf = r.out.find("leaf_alloc", header);
    CHECK(big != std::string::npos);
    CHECK(leaf != std::string::npos);
    CHECK(big < leaf);
    CHECK(r.out.find("Type: inuse_space") != std::string::npos);
}

// ---- symbols ----

TEST_CASE("the Symbolizer names a function of this process, its source file and line") {
    std::string error;
    const std::unique_ptr<pr::Symbolizer> sym = pr::Symbolizer::for_pid(getpid(), &error);
    REQUIRE_MESSAGE(sym != nullptr, error);
    CHECK(probe::known_function(1) == 4);

    // The address of a function's entry + 1 looks up its first instruction.
    const auto entry = reinterpret_cast<uint64_t>(&probe::known_function);
    const pr::Frame f = sym->resolve(entry + 1);
    CHECK(f.address == entry + 1);
    CHECK(f.function == "probe::known_function(int)");
    CHECK(f.file.find("test_profile.cc") != std::string::npos);
    CHECK(f.line > 0);
    CHECK(f.module.find("test-client-profile") != std::string::npos);
    CHECK(f.module_offset != 0);
    CHECK(f.module_offset <= entry + 1);

    // A return address names the caller and the line of the call.
    const uint64_t ret = probe::caller_of_return_address();
    const pr::Frame c = sym->resolve(ret);
    CHECK(c.function == "probe::caller_of_return_address()");
    CHECK(c.file.find("test_profile.cc") != std::string::npos);
    CHECK(c.line == probe::kCallLine);
    CHECK(sym->resolve(ret).function == c.function); // cached, same answer

    // A shared library's function, without its debug information: its module, no crash. memcpy
    // is libc's, or the sanitizer runtime's interceptor of it: the module dladdr names.
    const auto lib_fn = reinterpret_cast<uint64_t>(&memcpy);
    Dl_info info{};
    REQUIRE(dladdr(reinterpret_cast<void*>(lib_fn), &info) != 0);
    const pr::Frame lib = sym->resolve(lib_fn + 1);
    REQUIRE(!lib.module.empty());
    // The same file: dladdr gives the soname's path (libasan.so.8), the maps the file's own.
    char* want = realpath(info.dli_fname, nullptr);
    char* got = realpath(lib.module.c_str(), nullptr);
    REQUIRE((want != nullptr && got != nullptr));
    CHECK(std::string(got) == std::string(want));
    free(want);
    free(got);
    // Nothing is mapped at 16.
    CHECK(sym->resolve(16).module.empty());
}

TEST_CASE("the profile of this very process, read through the real /proc, names its functions") {
    ProfileEnv env;
    env.options.procfs = "/proc";
    const std::string path = testing::self_page().write(env.base);
    Region g;
    const uint64_t ret = probe::caller_of_return_address();
    g.add(3, {ret, reinterpret_cast<uint64_t>(&probe::known_function) + 1}, 4, 4096);
    const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(pwrite(fd, g.r.get(), sizeof *g.r, ARENA_PROFILE_OFFSET) ==
          static_cast<ssize_t>(sizeof *g.r));
    close(fd);

    pr::Profile p;
    const pr::ReadResult r = pr::read_pid(env.base, getpid(), env.options, &p);
    REQUIRE_MESSAGE(r.ok(), r.detail);
    CHECK(p.pid == getpid());
    std::string error;
    const std::unique_ptr<pr::Symbolizer> sym = pr::Symbolizer::for_pid(getpid(), &error);
    REQUIRE_MESSAGE(sym != nullptr, error);
    const std::string table = pr::to_table(p, sym.get(), pr::Order::LiveBytes, 10);
    INFO(table);
    CHECK(table.find("probe::caller_of_return_address() (test_profile.cc:" +
                     std::to_string(probe::kCallLine) + ")") != std::string::npos);
    CHECK(table.find("<- probe::known_function(int)") != std::string::npos);
    CHECK(pr::to_folded(p, sym.get(), pr::Order::LiveBytes) ==
          "probe::known_function(int);probe::caller_of_return_address() 4096\n");
}

TEST_CASE("the Symbolizer names a function of a library dlopen'ed before it was made") {
    const std::string plugin = testing::required_env("ARENA_TEST_PLUGIN");
    std::string error;
    const std::unique_ptr<pr::Symbolizer> before = pr::Symbolizer::for_pid(getpid(), &error);
    REQUIRE_MESSAGE(before != nullptr, error);
    void* handle = dlopen(plugin.c_str(), RTLD_NOW | RTLD_LOCAL);
    REQUIRE_MESSAGE(handle != nullptr, dlerror());
    const auto address = reinterpret_cast<uint64_t>(dlsym(handle, "plugin_make_string"));
    REQUIRE(address != 0);

    const std::unique_ptr<pr::Symbolizer> after = pr::Symbolizer::for_pid(getpid(), &error);
    REQUIRE_MESSAGE(after != nullptr, error);
    // One made before the dlopen says it is stale (arena-prof then makes a new one). (Checked
    // before resolving: libdw may dlopen libraries of its own while it looks for debug files.)
    CHECK(before->stale());
    CHECK_FALSE(after->stale());
    const pr::Frame f = after->resolve(address + 1);
    CHECK(f.function == "plugin_make_string");
    CHECK(f.module.find("arena_test_plugin") != std::string::npos);
    CHECK(f.module_offset < address);
    dlclose(handle);
}

TEST_CASE("the Symbolizer asks no debuginfod server, even when DEBUGINFOD_URLS names one") {
    const int server = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    REQUIRE(server >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    REQUIRE(bind(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(listen(server, 8) == 0);
    REQUIRE(getsockname(server, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/";
    setenv("DEBUGINFOD_URLS", url.c_str(), 1);

    std::string error;
    const std::unique_ptr<pr::Symbolizer> sym = pr::Symbolizer::for_pid(getpid(), &error);
    REQUIRE_MESSAGE(sym != nullptr, error);
    // libc and zlib come without their debug information: what a debuginfod server would serve.
    const pr::Frame libc = sym->resolve(reinterpret_cast<uint64_t>(&memcpy) + 1);
    const pr::Frame zlib = sym->resolve(reinterpret_cast<uint64_t>(&zlibVersion) + 1);
    unsetenv("DEBUGINFOD_URLS");
    CHECK(!libc.module.empty());
    CHECK(zlib.function == "zlibVersion");
    const int client = accept(server, nullptr, nullptr);
    CHECK(client < 0); // nobody connected
    if (client >= 0)
        close(client);
    close(server);
}

TEST_CASE("a Symbolizer for a process that does not exist is an error") {
    std::string error;
    CHECK(pr::Symbolizer::for_pid(0x3ffffff0, &error) == nullptr);
    CHECK(!error.empty());
}
