// SPDX-License-Identifier: MIT
// A profile as people and scripts read it (profile.h): a table of the top call stacks, JSON (one
// schema for arena-prof --json and cmond), and folded stacks for flame graphs. pprof is pprof.cc.
//
// The JSON schema (keys in this order):
//   pid, comm, on (sampling now), rate (mean bytes between samples), started_unix_ns, samples,
//   sampled_bytes, stacks_used, overflow, dropped, unmatched,
//   stacks: [{live_bytes, live_objects, alloc_bytes, alloc_objects, alloc_samples,
//             free_samples, frames: [{address ("0x..."), function, file, line, module}]}]
//   by live bytes, descending; frames innermost first; slot 0's stack ("other stacks") has none.
#include "profile_format.h"

#include "text.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>

namespace arena::client::profile {
namespace {

using Json = nlohmann::ordered_json;

/// Callers shown under a row of the table, and the width of each.
constexpr size_t kTableCallers = 4;
constexpr size_t kTableNameWidth = 60;
constexpr size_t kTableCallerWidth = 40;

const char* order_name(Order order) {
    switch (order) {
    case Order::LiveBytes:
        return "live bytes";
    case Order::AllocBytes:
        return "allocated bytes";
    case Order::AllocObjects:
        return "allocated objects";
    }
    return "?";
}

std::string base_name(const std::string& path) {
    const size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

/// Objects are estimates: whole numbers, "12.3k" or "4.5M" past ten thousand.
std::string count_text(double v) {
    char buf[32];
    if (v < 10000)
        snprintf(buf, sizeof buf, "%.0f", v);
    else if (v < 10e6)
        snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
    else
        snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
    return buf;
}

std::string pad_left(const std::string& s, size_t width) {
    return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

/// The innermost frame, "function (file:line)".
std::string site_text(const Stack& s, Symbolizer* sym) {
    if (s.frames.empty())
        return kOtherStacks;
    const Frame f = resolve_frame(sym, s.frames[0]);
    std::string text = printable(frame_label(f), kTableNameWidth);
    if (!f.file.empty())
        text += " (" + printable(base_name(f.file), kTableNameWidth) + ":" +
                std::to_string(f.line) + ")";
    return text;
}

/// The callers, shortened: "<- a <- b <- c <- d (+5 more)"; "" when there are none.
std::string callers_text(const Stack& s, Symbolizer* sym) {
    std::string text;
    const size_t n = s.frames.size();
    for (size_t i = 1; i < n && i <= kTableCallers; ++i)
        text += (i > 1 ? " <- " : "<- ") +
                printable(frame_label(resolve_frame(sym, s.frames[i])), kTableCallerWidth);
    if (n > kTableCallers + 1)
        text += " (+" + std::to_string(n - kTableCallers - 1) + " more)";
    return text;
}

Json frame_json(const Frame& f) {
    Json j;
    j["address"] = hex(f.address);
    j["function"] = f.function;
    j["file"] = f.file;
    j["line"] = f.line;
    j["module"] = f.module;
    return j;
}

/// A name in a folded line: no ';' (the separator) and no line break.
std::string folded_name(std::string s) {
    std::replace(s.begin(), s.end(), ';', ':');
    std::replace(s.begin(), s.end(), '\n', ' ');
    return s;
}

} // namespace

Frame resolve_frame(Symbolizer* sym, uint64_t address) {
    if (sym != nullptr)
        return sym->resolve(address);
    Frame f;
    f.address = address;
    return f;
}

std::string hex(uint64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "0x%" PRIx64, v);
    return buf;
}

std::string frame_label(const Frame& f) {
    if (!f.function.empty())
        return f.function;
    if (!f.module.empty())
        return base_name(f.module) + "+" + hex(f.module_offset);
    return hex(f.address);
}

double value_of(const Stack& s, Order order) {
    switch (order) {
    case Order::LiveBytes:
        return static_cast<double>(s.live_bytes());
    case Order::AllocBytes:
        return static_cast<double>(s.alloc_bytes);
    case Order::AllocObjects:
        return s.alloc_objects;
    }
    return 0;
}

std::vector<const Stack*> ordered(const Profile& p, Order order) {
    std::vector<const Stack*> out;
    out.reserve(p.stacks.size());
    for (const Stack& s : p.stacks)
        out.push_back(&s);
    std::sort(out.begin(), out.end(), [order](const Stack* a, const Stack* b) {
        const double va = value_of(*a, order), vb = value_of(*b, order);
        if (va != vb)
            return va > vb;
        if (a->alloc_bytes != b->alloc_bytes)
            return a->alloc_bytes > b->alloc_bytes;
        return a->frames < b->frames;
    });
    return out;
}

std::string to_table(const Profile& p, Symbolizer* sym, Order order, size_t top) {
    std::string out = "pid " + std::to_string(p.pid) + " (" + printable(p.comm, 16) +
                      ")  profiling " + (p.on ? "on" : "off") + ", rate " + human_bytes(p.rate) +
                      ", " + std::to_string(p.samples) + " samples (" +
                      human_bytes(p.sampled_bytes) + " sampled), " + std::to_string(p.stacks_used) +
                      " stacks";
    if (p.overflow != 0)
        out += ", overflow " + std::to_string(p.overflow);
    if (p.dropped != 0)
        out += ", dropped " + std::to_string(p.dropped);
    if (p.unmatched != 0)
        out += ", unmatched " + std::to_string(p.unmatched);
    const std::vector<const Stack*> stacks = ordered(p, order);
    const size_t shown = top == 0 ? stacks.size() : std::min(top, stacks.size());
    out += "\nby " + std::string(order_name(order)) + ", " + std::to_string(shown) + " of " +
           std::to_string(stacks.size()) + " call stacks\n\n";
    out += "      LIVE  LIVE OBJS       ALLOC ALLOC OBJS  FUNCTION (FILE:LINE)\n";
    const std::string indent(46, ' ');
    for (size_t i = 0; i < shown; ++i) {
        const Stack& s = *stacks[i];
        out += pad_left(human_bytes(s.live_bytes()), 10) + " " +
               pad_left(count_text(s.live_objects()), 10) + " " +
               pad_left(human_bytes(s.alloc_bytes), 11) + " " +
               pad_left(count_text(s.alloc_objects), 10) + "  " + site_text(s, sym) + "\n";
        if (const std::string callers = callers_text(s, sym); !callers.empty())
            out += indent + callers + "\n";
    }
    if (stacks.empty())
        out += "(nothing sampled yet)\n";
    return out;
}

std::string to_json(const Profile& p, Symbolizer* sym) {
    Json j;
    j["pid"] = p.pid;
    j["comm"] = p.comm;
    j["on"] = p.on;
    j["rate"] = p.rate;
    j["started_unix_ns"] = p.started_unix_ns;
    j["samples"] = p.samples;
    j["sampled_bytes"] = p.sampled_bytes;
    j["stacks_used"] = p.stacks_used;
    j["overflow"] = p.overflow;
    j["dropped"] = p.dropped;
    j["unmatched"] = p.unmatched;
    Json stacks = Json::array();
    for (const Stack* s : ordered(p, Order::LiveBytes)) {
        Json js;
        js["live_bytes"] = s->live_bytes();
        js["live_objects"] = std::llround(s->live_objects());
        js["alloc_bytes"] = s->alloc_bytes;
        js["alloc_objects"] = std::llround(s->alloc_objects);
        js["alloc_samples"] = s->alloc_samples;
        js["free_samples"] = s->free_samples;
        Json frames = Json::array();
        for (const uint64_t a : s->frames)
            frames.push_back(frame_json(resolve_frame(sym, a)));
        js["frames"] = std::move(frames);
        stacks.push_back(std::move(js));
    }
    j["stacks"] = std::move(stacks);
    // Names and paths hold any bytes: replace invalid UTF-8 instead of throwing.
    return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

std::string to_folded(const Profile& p, Symbolizer* sym, Order order) {
    std::string out;
    for (const Stack* s : ordered(p, order)) {
        const long long value = std::llround(value_of(*s, order));
        if (value <= 0)
            continue;
        std::string line;
        if (s->frames.empty())
            line = kOtherStacks;
        for (size_t i = s->frames.size(); i-- > 0;) {
            line += folded_name(frame_label(resolve_frame(sym, s->frames[i])));
            if (i > 0)
                line += ';';
        }
        out += line + " " + std::to_string(value) + "\n";
    }
    return out;
}

} // namespace arena::client::profile
