// SPDX-License-Identifier: MIT
// A profile as pprof reads it (profile.h's to_pprof): perftools' profile.proto
// (github.com/google/pprof, proto/profile.proto), encoded by hand (varints and length-delimited
// fields: the few messages below need no protobuf library), then gzip'd with zlib as `go tool
// pprof` and Go's runtime write it.
//
// Four sample types, as Go's heap profiles have them: alloc_objects/count, alloc_space/bytes,
// inuse_objects/count, inuse_space/bytes (the default). One Location per distinct address, with
// one Line naming its Function (name and file); one Mapping per module. Addresses are the
// return addresses recorded; the lines are those of the calls.
#include "profile_format.h"

#include <zlib.h>

#include <cmath>
#include <map>
#include <string_view>

namespace arena::client::profile {
namespace {

// Field numbers of profile.proto.
namespace field {
constexpr int kSampleType = 1, kSample = 2, kMapping = 3, kLocation = 4, kFunction = 5,
              kStringTable = 6, kTimeNanos = 9, kPeriodType = 11, kPeriod = 12,
              kDefaultSampleType = 14;
constexpr int kValueTypeType = 1, kValueTypeUnit = 2;
constexpr int kSampleLocationId = 1, kSampleValue = 2;
constexpr int kMappingId = 1, kMappingStart = 2, kMappingLimit = 3, kMappingFilename = 5,
              kMappingHasFunctions = 7, kMappingHasFilenames = 8, kMappingHasLineNumbers = 9;
constexpr int kLocationId = 1, kLocationMappingId = 2, kLocationAddress = 3, kLocationLine = 4;
constexpr int kLineFunctionId = 1, kLineLine = 2;
constexpr int kFunctionId = 1, kFunctionName = 2, kFunctionSystemName = 3, kFunctionFilename = 4;
} // namespace field

/// A protobuf message being written: fields in any order, each a tag and a value.
class Message {
public:
    /// A varint field (wire type 0). Zero is the default and is left out.
    Message& uint(int number, uint64_t v) {
        if (v != 0) {
            varint(static_cast<uint64_t>(number) << 3);
            varint(v);
        }
        return *this;
    }
    Message& sint(int number, int64_t v) { return uint(number, static_cast<uint64_t>(v)); }
    /// A length-delimited field (wire type 2): bytes, a string or a message.
    Message& bytes(int number, std::string_view v) {
        varint(static_cast<uint64_t>(number) << 3 | 2);
        varint(v.size());
        buf_.append(v);
        return *this;
    }
    Message& message(int number, const Message& m) { return bytes(number, m.buf_); }
    /// A packed repeated varint field.
    template <class Int>
    Message& packed(int number, const std::vector<Int>& values) {
        Message body;
        for (const Int v : values)
            body.varint(static_cast<uint64_t>(v));
        return bytes(number, body.buf_);
    }
    const std::string& data() const { return buf_; }

private:
    void varint(uint64_t v) {
        while (v >= 0x80) {
            buf_ += static_cast<char>((v & 0x7f) | 0x80);
            v >>= 7;
        }
        buf_ += static_cast<char>(v);
    }
    std::string buf_;
};

/// The string table: index 0 is "".
class Strings {
public:
    Strings() { index(""); }
    int64_t index(const std::string& s) {
        const auto [it, added] = ids_.emplace(s, static_cast<int64_t>(order_.size()));
        if (added)
            order_.push_back(s);
        return it->second;
    }
    void write(Message& profile) const {
        for (const std::string& s : order_)
            profile.bytes(field::kStringTable, s);
    }

private:
    std::map<std::string, int64_t> ids_;
    std::vector<std::string> order_;
};

/// The Locations, Functions and Mappings of a profile, each made once.
class Tables {
public:
    explicit Tables(Strings& strings) : strings_(strings) {}

    /// The location of a return address (0: slot 0's "other stacks").
    uint64_t location(Symbolizer* sym, uint64_t address) {
        if (const auto it = locations_.find(address); it != locations_.end())
            return it->second;
        const uint64_t id = locations_.size() + 1;
        locations_.emplace(address, id);
        Frame f;
        if (address != 0)
            f = resolve_frame(sym, address);
        const std::string name = address != 0 ? frame_label(f) : kOtherStacks;
        Message loc;
        loc.uint(field::kLocationId, id);
        if (!f.module.empty())
            loc.uint(field::kLocationMappingId, mapping(f));
        loc.uint(field::kLocationAddress, address);
        Message line;
        line.uint(field::kLineFunctionId, function(name, f.file)).sint(field::kLineLine, f.line);
        loc.message(field::kLocationLine, line);
        locations_out_.message(field::kLocation, loc);
        return id;
    }

    void write(Message& profile) {
        for (auto& [name, m] : mappings_) {
            Message msg;
            msg.uint(field::kMappingId, m.id)
                .uint(field::kMappingStart, m.start)
                .uint(field::kMappingLimit, m.limit)
                .sint(field::kMappingFilename, strings_.index(name))
                .uint(field::kMappingHasFunctions, 1)
                .uint(field::kMappingHasFilenames, m.has_files ? 1 : 0)
                .uint(field::kMappingHasLineNumbers, m.has_files ? 1 : 0);
            profile.message(field::kMapping, msg);
        }
    }

    const Message& locations() const { return locations_out_; }
    const Message& functions() const { return functions_out_; }

private:
    struct Mapping {
        uint64_t id = 0;
        uint64_t start = 0; // the load bias: address - module_offset
        uint64_t limit = 0; // past the highest address seen in it
        bool has_files = true;
    };

    uint64_t mapping(const Frame& f) {
        auto [it, added] = mappings_.try_emplace(f.module);
        Mapping& m = it->second;
        if (added) {
            m.id = mappings_.size();
            m.start = f.address - f.module_offset;
        }
        m.start = std::min(m.start, f.address - f.module_offset);
        m.limit = std::max(m.limit, f.address + 1);
        m.has_files = m.has_files && !f.file.empty();
        return m.id;
    }

    uint64_t function(const std::string& name, const std::string& file) {
        const auto key = std::make_pair(name, file);
        if (const auto it = functions_.find(key); it != functions_.end())
            return it->second;
        const uint64_t id = functions_.size() + 1;
        functions_.emplace(key, id);
        const int64_t name_id = strings_.index(name);
        Message fn;
        fn.uint(field::kFunctionId, id)
            .sint(field::kFunctionName, name_id)
            .sint(field::kFunctionSystemName, name_id)
            .sint(field::kFunctionFilename, strings_.index(file));
        functions_out_.message(field::kFunction, fn);
        return id;
    }

    Strings& strings_;
    std::map<uint64_t, uint64_t> locations_;
    std::map<std::pair<std::string, std::string>, uint64_t> functions_;
    std::map<std::string, Mapping> mappings_;
    Message locations_out_, functions_out_;
};

Message value_type(Strings& strings, const char* type, const char* unit) {
    Message m;
    m.sint(field::kValueTypeType, strings.index(type))
        .sint(field::kValueTypeUnit, strings.index(unit));
    return m;
}

/// gzip of `data` (zlib's deflate with a gzip wrapper).
std::string gzip(const std::string& data) {
    z_stream z{};
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return data; // pprof reads an uncompressed profile too
    std::string out(deflateBound(&z, data.size()), '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(data.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    const int r = deflate(&z, Z_FINISH);
    const size_t n = z.total_out;
    deflateEnd(&z);
    if (r != Z_STREAM_END)
        return data;
    out.resize(n);
    return out;
}

} // namespace

std::string to_pprof(const Profile& p, Symbolizer* sym) {
    Strings strings;
    Message profile;
    for (const auto& [type, unit] : {std::pair{"alloc_objects", "count"},
                                     {"alloc_space", "bytes"},
                                     {"inuse_objects", "count"},
                                     {"inuse_space", "bytes"}})
        profile.message(field::kSampleType, value_type(strings, type, unit));

    Tables tables(strings);
    for (const Stack& s : p.stacks) {
        std::vector<uint64_t> ids;
        for (const uint64_t a : s.frames)
            ids.push_back(tables.location(sym, a));
        if (ids.empty())
            ids.push_back(tables.location(sym, 0));
        const std::vector<int64_t> values = {
            std::llround(s.alloc_objects), static_cast<int64_t>(s.alloc_bytes),
            std::llround(s.live_objects()), static_cast<int64_t>(s.live_bytes())};
        Message sample;
        sample.packed(field::kSampleLocationId, ids).packed(field::kSampleValue, values);
        profile.message(field::kSample, sample);
    }
    // The messages of one repeated field need not be adjacent: append the tables as made.
    std::string out = profile.data();
    Message mappings;
    tables.write(mappings);
    out += mappings.data();
    out += tables.locations().data();
    out += tables.functions().data();

    Message tail;
    tail.sint(field::kTimeNanos, static_cast<int64_t>(p.started_unix_ns))
        .message(field::kPeriodType, value_type(strings, "space", "bytes"))
        .sint(field::kPeriod, static_cast<int64_t>(p.rate))
        .sint(field::kDefaultSampleType, strings.index("inuse_space"));
    strings.write(tail);
    out += tail.data();
    return gzip(out);
}

} // namespace arena::client::profile
