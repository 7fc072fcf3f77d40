// SPDX-License-Identifier: MIT
// The strict query parser and the per-route parameter check (issue 13).
#include "query.h"

#include <doctest/doctest.h>

using namespace cmond;

namespace {

// The parameters of `raw`; fails the test when it is refused.
QueryParams parsed(std::string_view raw) {
    auto r = parse_query(raw);
    if (const auto* e = std::get_if<QueryError>(&r)) {
        FAIL_CHECK("refused: " << e->message);
        return {};
    }
    return std::get<QueryParams>(std::move(r));
}

// The 400 message for `raw`, or "" when it parses.
std::string refusal(std::string_view raw) {
    const auto r = parse_query(raw);
    const auto* e = std::get_if<QueryError>(&r);
    return e ? e->message : "";
}

using P = QueryParams::value_type;

} // namespace

TEST_SUITE("query") {

    TEST_CASE("ordinary queries") {
        CHECK(parsed("").empty());
        CHECK(parsed("branch=main") == QueryParams{P{"branch", "main"}});
        CHECK(parsed("branch=feature%2Fx") == QueryParams{P{"branch", "feature/x"}});
        CHECK(parsed("branch=feature%2fx") == QueryParams{P{"branch", "feature/x"}});
        CHECK(parsed("a=1&b=2&a=3") == QueryParams{P{"a", "1"}, P{"b", "2"}, P{"a", "3"}});
        CHECK(parsed("branch=") == QueryParams{P{"branch", ""}}); // the route refuses it
        // Split first, decode after: encoded separators are part of the value.
        CHECK(parsed("v=a%3Db%26c%3Bd") == QueryParams{P{"v", "a=b&c;d"}});
        CHECK(parsed("n%61me=x") == QueryParams{P{"name", "x"}});
        // '+' is a literal plus (RFC 3986), not a space.
        CHECK(parsed("v=a+b") == QueryParams{P{"v", "a+b"}});
        CHECK(parsed("v=a%20b") == QueryParams{P{"v", "a b"}});
        // Bytes above ASCII pass; the route decides (branch_error refuses them).
        CHECK(parsed("v=%C3%A9") == QueryParams{P{"v", "\xc3\xa9"}});
    }

    TEST_CASE("';' is no separator and is refused") {
        for (const char* raw : {"branch=a;foo=1", "branch=a;b", "a;b=1", ";", "branch=main;"}) {
            CAPTURE(raw);
            CHECK(refusal(raw) ==
                  "Malformed query: ';' is not a separator (parameters are separated by '&')");
        }
    }

    TEST_CASE("exactly one '=' per parameter") {
        CHECK(refusal("branch=--upload-pack=id") ==
              "Malformed query: parameter 'branch' has more than one '=' (write '=' in a value as "
              "%3D)");
        CHECK(refusal("a=1&branch=x=y").find("parameter 'branch' has more than one '='") !=
              std::string::npos);
        CHECK(refusal("a==") != "");
        CHECK(refusal("branch") ==
              "Malformed query: parameter 'branch' has no '=' (NAME=VALUE expected)");
        CHECK(refusal("branch=main&x").find("parameter 'x' has no '='") != std::string::npos);
        CHECK(refusal("=main") == "Malformed query: a parameter has no name");
        CHECK(refusal("=") == "Malformed query: a parameter has no name");
    }

    TEST_CASE("empty parameters are refused") {
        for (const char* raw : {"a=1&&b=2", "branch=main&", "&branch=main", "&", "&&"}) {
            CAPTURE(raw);
            CHECK(refusal(raw) ==
                  "Malformed query: empty parameter (an '&' at the start or end, or two in a row)");
        }
    }

    TEST_CASE("bad percent escapes are refused") {
        for (const char* raw : {"branch=%zz", "branch=%4", "branch=%", "branch=a%4g", "branch=%%41",
                                "br%xanch=a", "%=a", "branch=%2"}) {
            CAPTURE(raw);
            CHECK(refusal(raw).find("Malformed query: bad percent escape in parameter '") == 0);
        }
        // A percent escape is two hex digits, nothing more: "%41" then "1".
        CHECK(parsed("v=%411") == QueryParams{P{"v", "A1"}});
    }

    TEST_CASE("control characters are refused, raw or decoded") {
        for (const std::string_view raw :
             {"branch=main%00", "branch=a%0ab", "branch=a%0Db", "branch=%7f", "branch=%1F",
              "br%00anch=x", "branch=a\tb", "branch=a\x01"}) {
            CAPTURE(raw);
            CHECK(refusal(raw).find("Malformed query: control character in parameter '") == 0);
        }
        // The name in the message is sanitized: no raw control byte reaches a reply or a log.
        const std::string msg = refusal(std::string("a\x01") + "b=1");
        CHECK(msg == "Malformed query: control character in parameter 'a\\x01b'");
    }

    TEST_CASE("names in messages are sanitized and cut") {
        const std::string msg = refusal(std::string(100, 'n'));
        CHECK(msg == "Malformed query: parameter '" + std::string(40, 'n') +
                         "...' has no '=' (NAME=VALUE expected)");
        const auto unknown = check_query(parsed("%22x%5C=1"), {"branch"});
        REQUIRE(unknown);
        CHECK(*unknown == "Unknown query parameter '\\\"x\\\\' (only 'branch' is accepted here)");
    }

    TEST_CASE("check_query: one parameter, at most once") {
        CHECK_FALSE(check_query(parsed(""), {"branch"}));
        CHECK_FALSE(check_query(parsed(""), {}));
        CHECK_FALSE(check_query(parsed("branch=x"), {"branch"}));
        CHECK(check_query(parsed("branch=a&branch=b"), {"branch"}) ==
              "Query parameter 'branch' given more than once");
        // The same value twice is still a repeat (httplib answered 200 here).
        CHECK(check_query(parsed("branch=x&branch=x"), {"branch"}) ==
              "Query parameter 'branch' given more than once");
        CHECK(check_query(parsed("brnach=a"), {"branch"}) ==
              "Unknown query parameter 'brnach' (only 'branch' is accepted here)");
        CHECK(check_query(parsed("branch=main"), {}) ==
              "Unknown query parameter 'branch' (this route takes none)");
        // Names are compared after decoding and exactly (case matters).
        CHECK_FALSE(check_query(parsed("br%61nch=x"), {"branch"}));
        CHECK(check_query(parsed("Branch=x"), {"branch"}));
        // An unknown name is reported before a repeat.
        CHECK(check_query(parsed("branch=a&branch=b&x=1"), {"branch"}) ==
              "Unknown query parameter 'x' (only 'branch' is accepted here)");
    }

    TEST_CASE("check_query: several parameters, each at most once, in any order") {
        const std::vector<std::string_view> two = {"state", "rate"};
        CHECK_FALSE(check_query(parsed(""), two));
        CHECK_FALSE(check_query(parsed("state=on"), two));
        CHECK_FALSE(check_query(parsed("rate=1&state=on"), two));
        CHECK(check_query(parsed("state=on&rate=1&state=off"), two) ==
              "Query parameter 'state' given more than once");
        CHECK(check_query(parsed("rate=1&state=on&rate=1"), two) ==
              "Query parameter 'rate' given more than once");
        CHECK(check_query(parsed("state=on&format=json"), two) ==
              "Unknown query parameter 'format' (only 'state' and 'rate' are accepted here)");
        CHECK(check_query(parsed("x=1"), {"a", "b", "c"}) ==
              "Unknown query parameter 'x' (only 'a', 'b' and 'c' are accepted here)");
    }

    TEST_CASE("query_value") {
        const QueryParams p = parsed("a=1&branch=feature%2Fx");
        CHECK(query_value(p, "branch") == "feature/x");
        CHECK(query_value(p, "a") == "1");
        CHECK_FALSE(query_value(p, "b"));
        CHECK(query_value(parsed("branch="), "branch") == "");
    }

} // TEST_SUITE
