// SPDX-License-Identifier: MIT
// Preload workload compiled by the gxx case: STL containers, <regex>, std::thread, iostreams
// and exceptions. The compile (cc1plus, as, ld) and the run both happen under the preload.
// Deterministic: a fixed-seed engine from <random> with our own reduction (distributions are
// implementation-defined), results combined in thread-index order.
#include <algorithm>
#include <cstdint>
#include <deque>
#include <iomanip>
#include <iostream>
#include <list>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

// FNV-1a over everything reported, printed as the final digest.
std::uint64_t g_digest = 1469598103934665603ULL;

void report(const std::string& name, const std::string& value) {
    for (unsigned char c : name + '\0' + value + '\0') {
        g_digest = (g_digest ^ c) * 1099511628211ULL;
    }
    std::cout << name << ": " << value << '\n';
}

std::uint64_t fnv(const std::string& s) {
    std::uint64_t h = 1469598103934665603ULL;
    for (unsigned char c : s)
        h = (h ^ c) * 1099511628211ULL;
    return h;
}

std::string hex(std::uint64_t v) {
    std::ostringstream os;
    os << std::hex << std::setw(16) << std::setfill('0') << v;
    return os.str();
}

void containers(std::mt19937_64& rng) {
    std::unordered_map<std::string, std::vector<int>> um;
    std::map<int, std::string> ordered;
    std::set<std::uint64_t> seen;
    std::deque<std::string> dq;
    std::list<std::unique_ptr<std::string>> owned;
    for (int i = 0; i < 200000; ++i) {
        auto key = "k" + std::to_string(rng() % 50000);
        um[key].push_back(i);
        ordered[static_cast<int>(rng() % 100000)] = key;
        seen.insert(rng() % 70000);
        dq.push_back(key);
        if (dq.size() > 1000)
            dq.pop_front();
        owned.push_back(std::make_unique<std::string>(i % 97, 'x'));
        if (i % 3 == 0)
            owned.pop_front();
    }
    std::size_t total = 0;
    for (const auto& [k, v] : um)
        total += v.size();
    std::vector<std::pair<std::string, std::size_t>> sizes;
    for (const auto& [k, v] : um)
        sizes.emplace_back(k, v.size());
    std::sort(sizes.begin(), sizes.end(), [](const auto& a, const auto& b) {
        return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    report("umap.keys", std::to_string(um.size()) + " total " + std::to_string(total));
    report("umap.top", sizes[0].first + "=" + std::to_string(sizes[0].second));
    report("map.size", std::to_string(ordered.size()) + " first " + ordered.begin()->second);
    report("set.size", std::to_string(seen.size()));
    report("deque.front", dq.front());
    report("list.size", std::to_string(owned.size()));
}

void regexes(std::mt19937_64& rng) {
    std::ostringstream text;
    for (int i = 0; i < 3000; ++i) {
        text << (rng() % 256) << '.' << (rng() % 256) << ".0." << i % 256 << " user" << i % 37
             << " GET /p/" << i << ' ' << 200 + i % 4 << '\n';
    }
    const std::regex line(R"((\d+)\.(\d+)\.0\.\d+ (user\d+) GET (/p/\d+) (\d+))");
    std::map<std::string, int> per_user;
    const std::string s = text.str();
    for (auto it = std::sregex_iterator(s.begin(), s.end(), line); it != std::sregex_iterator();
         ++it) {
        per_user[(*it)[3]] += std::stoi((*it)[5]);
    }
    report("regex.users",
           std::to_string(per_user.size()) + " user0=" + std::to_string(per_user["user0"]));
    report("regex.replace", hex(fnv(std::regex_replace(s, std::regex(R"(\d)"), "#"))));
    report("regex.search",
           std::regex_search(s, std::regex("user3[0-6] GET /p/29[0-9]{2} 20[13]")) ? "yes" : "no");
}

// Each thread builds its own structures; the strings it returns are freed by the main thread.
void threads() {
    constexpr int kThreads = 8;
    std::vector<std::vector<std::string>> results(kThreads);
    std::vector<std::thread> pool;
    for (int t = 0; t < kThreads; ++t) {
        pool.emplace_back([t, &results] {
            std::mt19937_64 rng(1000 + t);
            std::map<std::uint64_t, std::string> local;
            for (int i = 0; i < 40000; ++i) {
                local[rng() % 5000] = std::string(1 + rng() % 200, static_cast<char>('a' + t));
                if (i % 7 == 0)
                    local.erase(local.begin());
            }
            for (const auto& [k, v] : local)
                results[t].push_back(std::to_string(k) + v.substr(0, 3));
        });
    }
    for (auto& th : pool)
        th.join();
    std::uint64_t h = 0;
    std::size_t n = 0;
    for (const auto& r : results) {
        n += r.size();
        for (const auto& s : r)
            h = h * 31 + fnv(s);
    }
    report("threads", std::to_string(n) + " " + hex(h));
}

struct Boom : std::runtime_error {
    explicit Boom(int n) : std::runtime_error("boom " + std::to_string(n)), depth(n) {}
    int depth;
};

int recurse(int n, std::vector<std::string>& trail) {
    trail.push_back(std::string(64, static_cast<char>('0' + n % 10)));
    if (n % 50 == 49)
        throw Boom(n);
    return recurse(n + 1, trail) + 1;
}

void exceptions() {
    int caught = 0;
    long depth_sum = 0;
    for (int i = 0; i < 2000; ++i) {
        std::vector<std::string> trail;
        try {
            recurse(i % 50, trail);
        } catch (const Boom& e) {
            ++caught;
            depth_sum += e.depth + static_cast<long>(trail.size());
        }
    }
    std::string what;
    try {
        std::vector<int>().at(3);
    } catch (const std::out_of_range&) {
        what = "out_of_range";
    }
    report("exceptions", std::to_string(caught) + " " + std::to_string(depth_sum) + " " + what);
}

void streams() {
    std::stringstream ss;
    for (int i = 0; i < 100000; ++i)
        ss << std::setw(8) << i * 7 << ' ' << std::fixed << std::setprecision(3) << i / 9.0 << '\n';
    long sum = 0;
    double fsum = 0;
    int a = 0;
    double b = 0;
    while (ss >> a >> b) {
        sum += a;
        fsum += b;
    }
    std::ostringstream out;
    out << sum << ' ' << std::fixed << std::setprecision(2) << fsum;
    report("streams", out.str());
}

} // namespace

int main() {
    std::mt19937_64 rng(20240601);
    containers(rng);
    regexes(rng);
    threads();
    exceptions();
    streams();
    std::cout << "digest: " << hex(g_digest) << std::endl;
    return 0;
}
