# SPDX-License-Identifier: MIT
# Per-test outcomes of a CPython regression test run, from regrtest's --junit-xml file, for the
# cpython-* preload cases. regrtest's own output has timings and load averages, so the harness
# compares this instead: one sorted "OUTCOME test.id" line per test on stdout (a test that fails
# only under the preload then shows by name in the diff), and for every failure or error its
# exception on one line on stderr. Pass or fail is regrtest's exit status, not this script's.
#
#   outcomes.py RESULTS.xml
import sys
import xml.etree.ElementTree as ET

# regrtest records these as child elements of <testcase>; none of them means the test passed.
OUTCOMES = {"failure": "FAIL", "error": "ERROR", "skipped": "skipped"}


def outcome(case):
    """(OUTCOME, the exception without its traceback, on one line)."""
    for child in case:
        if child.tag in OUTCOMES:
            message = child.get("message") or child.text or ""
            return OUTCOMES[child.tag], " ".join(message.split())[:300]
    return "ok", ""


def main(path):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        # regrtest writes the file at the end: none means it was killed (its --timeout).
        print(f"no JUnit results from regrtest: {e}")
        print(f"no JUnit results in {path}: {e}", file=sys.stderr)
        return
    lines = []
    unrecorded = 0
    for case in root.iter("testcase"):
        name = case.get("name")
        if name is None:
            # regrtest's result class records neither a failed subTest nor an unexpected
            # success; its exit status still counts them.
            unrecorded += 1
            continue
        result, message = outcome(case)
        lines.append(f"{result} {name}")
        if result in ("FAIL", "ERROR"):
            print(f"{result} {name}: {message or '(no message)'}", file=sys.stderr)
    for line in sorted(lines):
        print(line)
    print(f"{len(lines)} tests recorded, {unrecorded} without a result")


if __name__ == "__main__":
    main(sys.argv[1])
