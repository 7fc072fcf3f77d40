// SPDX-License-Identifier: MIT
// The bitmap primitives and RunMap: runs inside one word, across words, of whole words, and
// exhaustion, checked against a plain vector<bool> model; RunMap's alignment, clean/dirty
// tracking and purging on real memory.
#include "bitmap.h"
#include "os.h"
#include "testing.h"

#include <doctest/doctest.h>

#include <cstring>
#include <sys/mman.h>
#include <vector>

using arena::RunMap;
namespace bits = arena::bits;

namespace {

/// Reference model: the first clear run of n bits at or after `from`, aligned per phase.
size_t model_find(const std::vector<bool>& m, size_t from, size_t n, size_t align, size_t phase) {
    for (size_t s = from; s + n <= m.size(); ++s) {
        if ((s + phase) % align != 0)
            continue;
        bool ok = true;
        for (size_t i = s; i < s + n && ok; ++i)
            ok = !m[i];
        if (ok)
            return s;
    }
    return bits::npos;
}

struct Bitmap {
    explicit Bitmap(size_t nbits) : words(bits::words_for(nbits) + 1, 0), model(nbits, false) {}
    std::vector<uint64_t> words;
    std::vector<bool> model;

    void set(size_t first, size_t n) {
        bits::set_range(words.data(), first, n);
        for (size_t i = first; i < first + n; ++i)
            model[i] = true;
    }
    void clear(size_t first, size_t n) {
        bits::clear_range(words.data(), first, n);
        for (size_t i = first; i < first + n; ++i)
            model[i] = false;
    }
    void check() const {
        for (size_t i = 0; i < model.size(); ++i)
            REQUIRE(bits::test(words.data(), i) == model[i]);
    }
};

} // namespace

TEST_SUITE("bitmap") {

    TEST_CASE("set and clear ranges inside one word, across words and of whole words") {
        Bitmap b(300);
        b.set(3, 5);    // inside word 0
        b.set(60, 10);  // across words 0 and 1
        b.set(128, 64); // exactly word 2
        b.set(250, 50); // across words 3 and 4, to the end
        b.check();
        CHECK(bits::count(b.words.data(), 0, 300) == 5 + 10 + 64 + 50);
        b.clear(62, 4);
        b.clear(128, 64);
        b.check();
        CHECK(bits::count(b.words.data(), 0, 300) == 5 + 6 + 50);
        CHECK(bits::count(b.words.data(), 60, 2) == 2);
    }

    TEST_CASE("find_set and find_clear stop at the limit") {
        Bitmap b(200);
        CHECK(bits::find_set(b.words.data(), 0, 200) == 200);
        b.set(130, 1);
        CHECK(bits::find_set(b.words.data(), 0, 200) == 130);
        CHECK(bits::find_set(b.words.data(), 131, 200) == 200);
        CHECK(bits::find_set(b.words.data(), 0, 100) == 100);
        b.set(0, 130);
        CHECK(bits::find_clear(b.words.data(), 0, 200) == 131);
        CHECK(bits::find_clear(b.words.data(), 0, 120) == 120);
    }

    TEST_CASE("a run may cross any number of words") {
        Bitmap b(64 * 8);
        b.set(0, 40); // free from 40
        CHECK(bits::find_clear_run(b.words.data(), 512, 0, 300, 1, 0) == 40);
        b.set(40, 300);
        CHECK(bits::find_clear_run(b.words.data(), 512, 0, 300, 1, 0) == bits::npos);
        CHECK(bits::find_clear_run(b.words.data(), 512, 0, 172, 1, 0) == 340);
        CHECK(bits::find_clear_run(b.words.data(), 512, 0, 173, 1, 0) == bits::npos);
    }

    TEST_CASE("runs of whole words and exhaustion") {
        Bitmap b(256);
        for (size_t i = 0; i < 4; ++i) {
            const size_t s = bits::find_clear_run(b.words.data(), 256, 0, 64, 1, 0);
            REQUIRE(s == i * 64);
            b.set(s, 64);
        }
        CHECK(bits::find_clear_run(b.words.data(), 256, 0, 1, 1, 0) == bits::npos);
        b.clear(100, 1);
        CHECK(bits::find_clear_run(b.words.data(), 256, 0, 1, 1, 0) == 100);
        CHECK(bits::find_clear_run(b.words.data(), 256, 0, 2, 1, 0) == bits::npos);
    }

    TEST_CASE("aligned runs honour the phase of the base address") {
        Bitmap b(1024);
        b.set(0, 3);
        // align 16 with phase 5: starts s with (s + 5) % 16 == 0 -> 11, 27, ...
        CHECK(bits::find_clear_run(b.words.data(), 1024, 0, 10, 16, 5) == 11);
        b.set(11, 1);
        CHECK(bits::find_clear_run(b.words.data(), 1024, 0, 10, 16, 5) == 27);
        CHECK(bits::find_clear_run(b.words.data(), 1024, 0, 600, 512, 0) == bits::npos);
        CHECK(bits::find_clear_run(b.words.data(), 1024, 0, 512, 512, 0) == 512);
    }

    TEST_CASE("random operations agree with the model") {
        uint64_t rng = 42;
        for (size_t nbits : {1u, 63u, 64u, 65u, 1000u, 4096u}) {
            Bitmap b(nbits);
            for (int op = 0; op < 400; ++op) {
                const size_t first = testing::next_random(rng) % nbits;
                const size_t n = 1 + testing::next_random(rng) % (nbits - first);
                if (testing::next_random(rng) % 3 == 0)
                    b.clear(first, n);
                else if (testing::next_random(rng) % 2 == 0)
                    b.set(first, n);
                const size_t want = 1 + testing::next_random(rng) % (nbits < 300 ? nbits : 300);
                const size_t align = size_t{1} << (testing::next_random(rng) % 9); // 1 .. 256
                const size_t phase = testing::next_random(rng) % align;
                const size_t from = testing::next_random(rng) % nbits;
                REQUIRE(bits::find_clear_run(b.words.data(), nbits, from, want, align, phase) ==
                        model_find(b.model, from, want, align, phase));
            }
            b.check();
        }
    }

    TEST_CASE("runs are found in heavily fragmented maps (every other bit used)") {
        for (size_t nbits : {64u, 130u, 1024u}) {
            Bitmap b(nbits);
            for (size_t i = 0; i < nbits; i += 2)
                b.set(i, 1);
            CHECK(bits::find_clear_run(b.words.data(), nbits, 0, 1, 1, 0) == 1);
            CHECK(bits::find_clear_run(b.words.data(), nbits, 0, 2, 1, 0) == bits::npos);
            b.clear(nbits - 4, 4); // a run of 5 at the end: the last free odd bit and these
            CHECK(bits::find_clear_run(b.words.data(), nbits, 0, 5, 1, 0) == nbits - 5);
            const size_t aligned4 = (nbits - 4) % 4 == 0 ? nbits - 4 : bits::npos; // 130: none
            CHECK(bits::find_clear_run(b.words.data(), nbits, 0, 4, 4, 0) == aligned4);
            CHECK(bits::find_clear_run(b.words.data(), nbits, 0, 6, 1, 0) == bits::npos);
        }
    }

    TEST_CASE("for_each_run merges runs across words") {
        std::vector<uint64_t> a(4, 0), m(4, 0);
        bits::set_range(a.data(), 10, 200); // 10..209
        bits::set_range(m.data(), 64, 64);  // masked: 64..127
        std::vector<std::pair<size_t, size_t>> runs;
        bits::for_each_run(a.data(), m.data(), 256,
                           [&](size_t f, size_t n) { runs.emplace_back(f, n); });
        REQUIRE(runs.size() == 2);
        CHECK(runs[0] == std::make_pair(size_t{10}, size_t{54}));
        CHECK(runs[1] == std::make_pair(size_t{128}, size_t{82}));
        runs.clear();
        bits::for_each_run(a.data(), nullptr, 100,
                           [&](size_t f, size_t n) { runs.emplace_back(f, n); });
        REQUIRE(runs.size() == 1);
        CHECK(runs[0] == std::make_pair(size_t{10}, size_t{90}));
    }

} // TEST_SUITE("bitmap")

TEST_SUITE("runmap") {

    struct MappedRunMap {
        explicit MappedRunMap(size_t pages) : npages(pages) {
            data = static_cast<char*>(arena::os::reserve(npages * 4096));
            meta.assign(RunMap::metadata_bytes(npages) / 8 + 1, 0);
            REQUIRE(data != nullptr);
            runs.init(meta.data(), npages, reinterpret_cast<uintptr_t>(data), 12);
        }
        ~MappedRunMap() { arena::os::unreserve(data, npages * 4096); }
        size_t npages;
        char* data;
        std::vector<uint64_t> meta;
        RunMap runs;
    };

    TEST_CASE("claim reports clean memory until it is written and released") {
        MappedRunMap m(100);
        const size_t a = m.runs.find(10, 1);
        REQUIRE(a == 0);
        CHECK(m.runs.claim(a, 10)); // fresh mapping: zero
        memset(m.data, 0xab, 10 * 4096);
        m.runs.release(a, 10);
        CHECK(m.runs.dirty_units() == 10);
        const size_t b = m.runs.find(4, 1);
        REQUIRE(b == 0);
        CHECK_FALSE(m.runs.claim(b, 4)); // reused without purge: dirty
        CHECK(m.runs.dirty_units() == 6);
    }

    TEST_CASE("purge waits one tick, trim does not; purged pages read as zero") {
        MappedRunMap m(64);
        const size_t a = m.runs.find(8, 1);
        m.runs.claim(a, 8);
        memset(m.data, 0xcd, 8 * 4096);
        m.runs.release(a, 8);
        CHECK(m.runs.purge(false) == 0); // freed during this tick: young
        CHECK(m.runs.dirty_units() == 8);
        CHECK(m.runs.purge(false) == 8 * 4096); // a whole tick later
        CHECK(m.runs.dirty_units() == 0);
        for (size_t i = 0; i < 8 * 4096; i += 512)
            REQUIRE(m.data[i] == 0);
        m.runs.claim(m.runs.find(8, 1), 8);
        memset(m.data, 1, 4096);
        m.runs.release(0, 8);
        CHECK(m.runs.purge(true) == 8 * 4096);
        CHECK(m.runs.claim(0, 8)); // clean again
    }

    TEST_CASE("take_old and give_back: a purge in batches without the owner's lock") {
        MappedRunMap m(300);
        // Three runs: [0,40) and [100,160) freed a tick ago, [200,210) freed just now.
        m.runs.claim(m.runs.find(300, 1), 300);
        memset(m.data, 0xee, 300 * 4096);
        m.runs.release(0, 40);
        m.runs.release(100, 60);
        m.runs.end_tick();
        m.runs.release(200, 10);
        CHECK(m.runs.dirty_units() == 110);
        RunMap::Span spans[4];
        size_t n = 0;
        // At most 50 units per batch: [0,40) whole, then [100,110) cut.
        size_t next = m.runs.take_old(0, spans, 4, 50, &n);
        REQUIRE(n == 2);
        CHECK(spans[0].first == 0);
        CHECK(spans[0].n == 40);
        CHECK(spans[1].first == 100);
        CHECK(spans[1].n == 10);
        CHECK(next == 110);
        CHECK(m.runs.busy_units() == 50);
        CHECK(m.runs.dirty_units() == 60);
        // Busy runs are out of everybody's reach: not found, not grown into, not purged by a tick.
        CHECK(m.runs.find(30, 1) == 110);
        CHECK_FALSE(m.runs.range_free(0, 1));
        CHECK(m.runs.purge(true) == 60 * 4096);
        CHECK(m.runs.dirty_units() == 0);
        for (size_t i = 0; i < n; ++i) {
            const auto& sp = spans[i];
            REQUIRE(arena::os::purge(m.data + sp.first * 4096, sp.n * 4096) == sp.n * 4096);
            m.runs.give_back(sp.first, sp.n, true);
        }
        CHECK(m.runs.busy_units() == 0);
        CHECK(m.runs.find(40, 1) == 0); // free again, and clean
        CHECK(m.runs.claim(0, 40));
        CHECK(m.data[4096 * 39] == 0);
        // A run that could not be purged goes back dirty and old: the next tick takes it again.
        m.runs.release(0, 40);
        m.runs.end_tick();
        next = m.runs.take_old(0, spans, 4, 1000, &n);
        REQUIRE(n == 1);
        CHECK(next == m.runs.top());
        m.runs.give_back(spans[0].first, spans[0].n, false);
        CHECK(m.runs.dirty_units() == 40);
        CHECK(m.runs.take_old(0, spans, 4, 1000, &n) == m.runs.top());
        CHECK(n == 1);
        m.runs.give_back(spans[0].first, spans[0].n, false);
        // From a cursor inside a run: only the part above it.
        CHECK(m.runs.take_old(25, spans, 4, 1000, &n) == m.runs.top());
        REQUIRE(n == 1);
        CHECK(spans[0].first == 25);
        CHECK(spans[0].n == 15);
        m.runs.give_back(25, 15, true);
        CHECK_FALSE(m.runs.claim(m.runs.find(40, 1), 40)); // 0..25 are still dirty
    }

    TEST_CASE("units past the end are never handed out; exhaustion returns npos") {
        MappedRunMap m(70);
        CHECK(m.runs.find(71, 1) == bits::npos);
        const size_t a = m.runs.find(70, 1);
        REQUIRE(a == 0);
        m.runs.claim(a, 70);
        CHECK(m.runs.find(1, 1) == bits::npos);
        CHECK(m.runs.used_units() == 70);
        m.runs.release(30, 5);
        CHECK(m.runs.find(5, 1) == 30);
        CHECK(m.runs.find(6, 1) == bits::npos);
        CHECK(m.runs.range_free(30, 5));
        CHECK_FALSE(m.runs.range_free(29, 2));
        CHECK_FALSE(m.runs.range_free(68, 5));
    }

    /// Random claims and releases of runs of 1..8 units, and now and then of up to `big` units, on
    /// a map of `nunits`: every find must be what a first-fit scan of the model finds (after the
    /// recent-run shortcut), so a hint that is too high or too low shows as a different run.
    /// With `repair_every`, RunMap::repair runs that often: it forgets the recent run and the
    /// hints, and must keep the counters and first fit.
    void check_first_fit(size_t nunits, size_t big, int ops, uint64_t rng, int repair_every = 0) {
        MappedRunMap m(nunits);
        std::vector<bool> model(nunits, false);
        std::vector<std::pair<size_t, size_t>> live;
        size_t recent_first = 0, recent_n = 0; // the model of the recent-run shortcut
        for (int op = 0; op < ops; ++op) {
            if (repair_every != 0 && op % repair_every == repair_every - 1) {
                m.runs.repair();
                recent_n = 0;
                size_t used = 0;
                for (bool b : model)
                    used += b ? 1 : 0;
                REQUIRE(m.runs.used_units() == used);
            }
            if (!live.empty() && testing::next_random(rng) % 3 == 0) {
                const size_t k = testing::next_random(rng) % live.size();
                const auto [first, n] = live[k];
                m.runs.release(first, n);
                for (size_t i = first; i < first + n; ++i)
                    model[i] = false;
                recent_first = first;
                recent_n = n;
                live[k] = live.back();
                live.pop_back();
                continue;
            }
            const size_t n =
                1 + (testing::next_random(rng) % 4 == 0 ? testing::next_random(rng) % big
                                                        : testing::next_random(rng) % 8);
            bool recent_fits = recent_n >= n;
            for (size_t i = recent_first; recent_fits && i < recent_first + n; ++i)
                recent_fits = !model[i];
            const size_t want = recent_fits ? recent_first : model_find(model, 0, n, 1, 0);
            const size_t got = m.runs.find(n, 1);
            REQUIRE(got == want);
            if (got == bits::npos)
                continue;
            m.runs.claim(got, n);
            for (size_t i = got; i < got + n; ++i)
                model[i] = true;
            if (got <= recent_first && recent_first < got + n) {
                const size_t end = recent_first + recent_n;
                recent_first = got + n;
                recent_n = end > recent_first ? end - recent_first : 0;
            }
            live.emplace_back(got, n);
        }
    }

    TEST_CASE(
        "find takes the run released last if it fits, else the first fit, through its hints") {
        check_first_fit(2000, 200, 3000, 99);
    }

    TEST_CASE("first fit holds when released runs merge into runs longer than release measures") {
        // Runs up to 12,000 units: merged free runs pass RunMap::kMergeScan (4,096), past which
        // release lowers every hint level.
        check_first_fit(60000, 12000, 2500, 7);
    }

    TEST_CASE("repair keeps a consistent map's counters and first fit") {
        check_first_fit(2000, 200, 3000, 5, 37);
    }

    TEST_CASE(
        "repair after a claim cut short (a fork child): the run stays used, counted, never found") {
        // What a fork child finds when the thread claiming a run did not survive: its used bits set
        // and nothing else (counters, hints, top) updated yet.
        MappedRunMap m(300);
        m.runs.claim(m.runs.find(10, 1), 10);
        uint64_t* used = const_cast<uint64_t*>(m.runs.used_bits());
        bits::set_range(used, 100, 80); // a claim of [100, 180) cut short
        m.runs.repair();
        CHECK(m.runs.used_units() == 90);
        CHECK(m.runs.top() == 180);
        for (int i = 0; i < 20; ++i) {
            const size_t s = m.runs.find(5, 1);
            REQUIRE(s != bits::npos);
            CHECK((s + 5 <= 100 || s >= 180));
            m.runs.claim(s, 5);
        }
        CHECK(m.runs.used_units() == 190);
    }

    TEST_CASE("aligned finds are aligned in address space") {
        MappedRunMap m(4096);
        m.runs.claim(m.runs.find(1, 1), 1);
        for (size_t align : {2u, 16u, 256u, 1024u}) {
            const size_t s = m.runs.find(3, align);
            REQUIRE(s != bits::npos);
            CHECK(m.runs.address(s) % (align * 4096) == 0);
        }
    }

    TEST_CASE("truncate cuts the never-used tail and names its bitmap pages; the rest works on") {
        constexpr size_t kUnits = size_t{1} << 20; // 128 KiB a bitmap
        MappedRunMap m(kUnits);
        const size_t a = m.runs.find(300, 1);
        m.runs.claim(a, 300);
        m.runs.release(100, 50);
        RunMap::Storage unused[3];
        m.runs.truncate(256, unused); // below top(): refused
        CHECK(m.runs.nunits() == kUnits);
        m.runs.truncate(1000, unused); // not whole words: refused
        CHECK(m.runs.nunits() == kUnits);
        for (const RunMap::Storage& s : unused)
            CHECK(s.bytes == 0);
        m.runs.truncate(512, unused);
        CHECK(m.runs.nunits() == 512);
        const uintptr_t meta = reinterpret_cast<uintptr_t>(m.meta.data());
        const size_t map_bytes = kUnits / 8;
        for (unsigned i = 0; i < 3; ++i) {
            const uintptr_t p = reinterpret_cast<uintptr_t>(unused[i].p);
            CHECK(p % 4096 == 0);
            CHECK(unused[i].bytes % 4096 == 0);
            CHECK(unused[i].bytes >= map_bytes - 2 * 4096);
            CHECK(p >= meta + i * map_bytes + 512 / 8); // within bitmap i, past its kept words
            CHECK(p + unused[i].bytes <= meta + (i + 1) * map_bytes);
        }
        CHECK(m.runs.find(50, 1) == 100);         // the hole below
        CHECK(m.runs.find(212, 1) == 300);        // the rest up to the new end
        CHECK(m.runs.find(213, 1) == bits::npos); // nothing past it
        m.runs.claim(300, 212);
        CHECK(m.runs.find(1, 1) == 100);
        CHECK(m.runs.find(64, 1) == bits::npos);
        CHECK_FALSE(m.runs.range_free(500, 20));
    }

} // TEST_SUITE("runmap")
