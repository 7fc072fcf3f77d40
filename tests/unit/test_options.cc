// SPDX-License-Identifier: MIT
// The ARENA_* options: the parsers, and that README.md lists exactly the options of the table.
#include "options.h"

#include <doctest/doctest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

using namespace arena;

TEST_SUITE("options") {

    TEST_CASE("sizes with suffixes") {
        int64_t v = 0;
        CHECK(parse_size("0", &v));
        CHECK(v == 0);
        CHECK(parse_size("4096", &v));
        CHECK(v == 4096);
        CHECK(parse_size("64G", &v));
        CHECK(v == int64_t{64} << 30);
        CHECK(parse_size("16m", &v));
        CHECK(v == int64_t{16} << 20);
        CHECK(parse_size("2TiB", &v));
        CHECK(v == int64_t{2} << 40);
        CHECK(parse_size("10kb", &v));
        CHECK(v == 10240);
        CHECK(parse_size("12b", &v));
        CHECK(v == 12);
        for (const char* bad :
             {"", "G", "-1", "1.5G", "12 G", "1X", "99999999999999999999", "9999999999T", "0x10"})
            CHECK_MESSAGE(!parse_size(bad, &v), bad);
    }

    TEST_CASE("integers and booleans") {
        int64_t v = 0;
        CHECK(parse_int("-1", &v));
        CHECK(v == -1);
        CHECK(parse_int("500", &v));
        CHECK(v == 500);
        CHECK_FALSE(parse_int("5s", &v));
        CHECK_FALSE(parse_int("", &v));
        CHECK_FALSE(parse_int("-", &v));
        for (const char* t : {"1", "true", "YES", "on"}) {
            CHECK(parse_bool(t, &v));
            CHECK(v == 1);
        }
        for (const char* f : {"0", "false", "No", "off"}) {
            CHECK(parse_bool(f, &v));
            CHECK(v == 0);
        }
        CHECK_FALSE(parse_bool("2", &v));
        CHECK_FALSE(parse_bool("yess", &v));
    }

    TEST_CASE("defaults are within their own ranges") {
        for (const OptionInfo& o : kOptionTable) {
            CHECK(std::string(o.env).rfind("ARENA_", 0) == 0);
            if (o.kind != OptionKind::String) {
                CHECK(o.def >= o.min);
                CHECK(o.def <= o.max);
            }
            CHECK(std::string(o.help).size() > 10);
        }
    }

    TEST_CASE("README.md lists every option of the table and no other") {
        const char* path = getenv("ARENA_README");
        REQUIRE_MESSAGE(path != nullptr, "ARENA_README must point at README.md");
        std::ifstream in(path);
        REQUIRE(in.good());
        std::stringstream ss;
        ss << in.rdbuf();
        const std::string readme = ss.str();
        // Option rows of the README's table look like: | `ARENA_NAME` | ...
        std::set<std::string> listed;
        const std::regex row(R"(\|\s*`(ARENA_[A-Z_]+)`\s*\|)");
        for (auto it = std::sregex_iterator(readme.begin(), readme.end(), row);
             it != std::sregex_iterator(); ++it)
            listed.insert((*it)[1]);
        std::set<std::string> table;
        for (const OptionInfo& o : kOptionTable)
            table.insert(o.env);
        for (const std::string& name : table)
            CHECK_MESSAGE(listed.count(name) == 1, name, " is missing from README.md");
        for (const std::string& name : listed)
            CHECK_MESSAGE(table.count(name) == 1, name, " is in README.md but not in options.h");
    }

} // TEST_SUITE
