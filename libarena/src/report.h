// SPDX-License-Identifier: MIT
// Messages on stderr without malloc or stdio: a fixed buffer formatter (Msg) and the heap-error
// reporter. Every line libarena prints starts with "arena: ".
#pragma once

#include <cstddef>
#include <cstdint>

namespace arena {

/// Writes v in decimal into out (at least 21 bytes), NUL-terminated; returns its length.
size_t format_decimal(uint64_t v, char* out);

/// Builds one line in a fixed buffer and writes it with a single write(2). Truncates silently.
class Msg {
public:
    Msg& str(const char* s);
    Msg& chr(char c);
    Msg& u64(uint64_t v);
    Msg& i64(int64_t v);
    Msg& hex(uintptr_t v);
    /// A byte count in the largest binary unit that keeps it exact-ish ("64 GiB", "1.5 MiB").
    Msg& bytes(uint64_t v);
    Msg& nl() { return chr('\n'); }
    void emit();

private:
    static constexpr size_t kCapacity = 512; // a line, or a few of malloc_stats's
    char buf_[kCapacity];
    size_t len_ = 0;
};

enum class HeapError : unsigned {
    DoubleFree,  // free of a block that is already free
    InvalidFree, // pointer inside the arena that is not the start of a live block
    Count
};

/// Counts the error, reports it on stderr (the first of each kind, or every one with
/// ARENA_VERBOSE=1) with the address and the calling function, and aborts when
/// ARENA_ABORT_ON_ERROR=1.
void report_heap_error(HeapError kind, const void* p, const char* func);

/// Errors caught so far, by kind.
uint64_t heap_error_count(HeapError kind);

} // namespace arena
