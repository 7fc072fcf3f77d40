// SPDX-License-Identifier: MIT
// The options table and its allocation-free parser (see options.h).
#include "options.h"

#include "os.h"
#include "report.h"

#include <atomic>
#include <cstdlib>

namespace arena {

const OptionInfo kOptionTable[kOptionCount] = {
#define ARENA_OPTION_INFO(id, kind, def, lo, hi, str, help)                                        \
    {"ARENA_" #id, OptionKind::kind, def, lo, hi, str, help},
    ARENA_OPTION_TABLE(ARENA_OPTION_INFO)
#undef ARENA_OPTION_INFO
};

namespace {

constinit const char* g_strings[kOptionCount] = {
#define ARENA_OPTION_STRING(id, kind, def, lo, hi, str, help) str,
    ARENA_OPTION_TABLE(ARENA_OPTION_STRING)
#undef ARENA_OPTION_STRING
};

constinit int64_t g_values[kOptionCount] = {
#define ARENA_OPTION_DEFAULT(id, kind, def, lo, hi, str, help) def,
    ARENA_OPTION_TABLE(ARENA_OPTION_DEFAULT)
#undef ARENA_OPTION_DEFAULT
};

char lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool equals_nocase(const char* a, const char* b) {
    for (; *a && *b; ++a, ++b)
        if (lower(*a) != lower(*b))
            return false;
    return *a == *b;
}

/// Parses decimal digits; sets *end past them. False on no digits or overflow.
bool parse_digits(const char* s, const char** end, uint64_t* out) {
    uint64_t v = 0;
    const char* p = s;
    for (; *p >= '0' && *p <= '9'; ++p) {
        const uint64_t d = static_cast<uint64_t>(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (p == s)
        return false;
    *end = p;
    *out = v;
    return true;
}

const char* kind_example(OptionKind k) {
    switch (k) {
    case OptionKind::Bool:
        return "0 or 1";
    case OptionKind::Int:
        return "an integer";
    case OptionKind::Size:
        return "a size such as 64G";
    case OptionKind::String:
        return "a string";
    }
    return "";
}

} // namespace

bool parse_int(const char* s, int64_t* out) {
    bool neg = false;
    if (*s == '-') {
        neg = true;
        ++s;
    }
    const char* end = nullptr;
    uint64_t v = 0;
    if (!parse_digits(s, &end, &v) || *end != '\0' || v > uint64_t{INT64_MAX})
        return false;
    *out = neg ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
    return true;
}

bool parse_size(const char* s, int64_t* out) {
    struct Suffix {
        const char* text;
        unsigned shift;
    };
    static constexpr Suffix kSuffixes[] = {
        {"", 0},     {"b", 0},  {"k", 10},  {"kb", 10},  {"kib", 10}, {"m", 20},  {"mb", 20},
        {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30}, {"t", 40},   {"tb", 40}, {"tib", 40},
    };
    const char* end = nullptr;
    uint64_t v = 0;
    if (!parse_digits(s, &end, &v))
        return false;
    for (const Suffix& suffix : kSuffixes) {
        if (!equals_nocase(end, suffix.text))
            continue;
        if (v > (uint64_t{INT64_MAX} >> suffix.shift))
            return false;
        *out = static_cast<int64_t>(v << suffix.shift);
        return true;
    }
    return false;
}

bool parse_bool(const char* s, int64_t* out) {
    static constexpr const char* kTrue[] = {"1", "true", "yes", "on"};
    static constexpr const char* kFalse[] = {"0", "false", "no", "off"};
    for (const char* t : kTrue)
        if (equals_nocase(s, t)) {
            *out = 1;
            return true;
        }
    for (const char* f : kFalse)
        if (equals_nocase(s, f)) {
            *out = 0;
            return true;
        }
    return false;
}

void options_load() {
    static constinit std::atomic<bool> loaded{false};
    if (loaded.exchange(true, std::memory_order_acq_rel))
        return;
    if (os::secure_exec()) {
        g_values[static_cast<unsigned>(Opt::STATS)] = 0;
        return;
    }
    for (unsigned i = 0; i < kOptionCount; ++i) {
        const OptionInfo& info = kOptionTable[i];
        const char* s = os::env(info.env);
        if (s == nullptr || *s == '\0')
            continue;
        int64_t v = 0;
        bool ok = false;
        switch (info.kind) {
        case OptionKind::Bool:
            ok = parse_bool(s, &v);
            break;
        case OptionKind::Int:
            ok = parse_int(s, &v);
            break;
        case OptionKind::Size:
            ok = parse_size(s, &v);
            break;
        case OptionKind::String:
            g_strings[i] = s; // environment strings live as long as the process
            continue;
        }
        if (ok && info.kind != OptionKind::String && (v < info.min || v > info.max)) {
            Msg m;
            m.str("arena: warning: ")
                .str(info.env)
                .str("=")
                .str(s)
                .str(" is out of range [")
                .i64(info.min)
                .str(", ")
                .i64(info.max)
                .str("]; using the default ")
                .i64(info.def)
                .nl()
                .emit();
            continue;
        }
        if (!ok) {
            Msg m;
            m.str("arena: warning: ")
                .str(info.env)
                .str("=")
                .str(s)
                .str(" is not ")
                .str(kind_example(info.kind))
                .str("; using the default ")
                .i64(info.def)
                .nl()
                .emit();
            continue;
        }
        g_values[i] = v;
    }
}

int64_t option(Opt o) {
    return __atomic_load_n(&g_values[static_cast<unsigned>(o)], __ATOMIC_RELAXED);
}

const char* option_str(Opt o) {
    return g_strings[static_cast<unsigned>(o)];
}

void set_option(Opt o, int64_t v) {
    __atomic_store_n(&g_values[static_cast<unsigned>(o)], v, __ATOMIC_RELAXED);
}

} // namespace arena
