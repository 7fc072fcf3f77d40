// SPDX-License-Identifier: MIT
// The JSON of a process; the schema is json.h's comment. The summary is the full form without
// some keys, built by the same code, so the two can never name a key differently.
#include "json.h"

#include "schema.h"

namespace arena::client {

using Json = nlohmann::ordered_json;

namespace {

Json optional_number(const std::optional<double>& v) {
    return v ? Json(*v) : Json(nullptr);
}

/// {name: value} of every field of one kind, in table order.
Json fields_json(const snapshot::Snapshot& s, FieldKind kind) {
    Json out = Json::object();
    for (const Field& f : fields()) {
        if (f.kind != kind)
            continue;
        const uint64_t raw = f.raw(s);
        out[f.name] = f.is_signed ? Json(static_cast<int64_t>(raw)) : Json(raw);
    }
    return out;
}

Json size_classes_json(const snapshot::Snapshot& s) {
    Json out = Json::array();
    for (unsigned c = 0; c < s.nclasses(); ++c) {
        const uint64_t a = s.class_alloc[c], f = s.class_free[c];
        const uint64_t live = a > f ? a - f : 0;
        out.push_back({{"size", s.head.class_size[c]},
                       {"allocs", a},
                       {"frees", f},
                       {"live_blocks", live},
                       {"live_bytes", live * s.head.class_size[c]}});
    }
    return out;
}

Json control_json(const arena_stats_control& c) {
    const bool purge_pending = c.purge_requests != c.purges_served;
    return {
        {"trim_requests", c.trim_requests},
        {"trims_served", c.trims_served},
        {"trim_pending", c.trim_requests != c.trims_served},
        {"purge_requests", c.purge_requests},
        {"purges_served", c.purges_served},
        {"purge_delay_request", purge_pending ? Json(c.purge_delay_ms) : Json(nullptr)},
    };
}

Json make(const Process& p, const Rates* rates) {
    const bool full = rates != nullptr;
    Json j = Json::object();
    j["pid"] = p.pid;
    j["comm"] = p.comm;
    j["cmdline"] = p.cmdline;
    j["uid"] = p.uid;
    j["start_time"] = p.start_time;
    j["created_unix_ns"] = p.created_unix_ns();
    if (full) {
        j["page_size"] = p.snap.head.page_size;
        j["path"] = p.path;
    }
    j["live_bytes"] = p.live_bytes();
    j["live_blocks"] = p.live_blocks();
    if (full) {
        j["allocs_per_second"] = optional_number(rates->allocs_per_second);
        j["frees_per_second"] = optional_number(rates->frees_per_second);
    }
    j["events"] = fields_json(p.snap, FieldKind::Event);
    j["gauges"] = fields_json(p.snap, FieldKind::Gauge);
    if (full) {
        j["size_classes"] = size_classes_json(p.snap);
        j["control"] = control_json(p.control());
    }
    return j;
}

} // namespace

Json process_json(const Process& p, const Rates& rates) {
    return make(p, &rates);
}

Json process_summary_json(const Process& p) {
    return make(p, nullptr);
}

} // namespace arena::client
