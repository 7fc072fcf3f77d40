// SPDX-License-Identifier: MIT
// Every form of C++ operator new and delete (plain, array, nothrow, sized, aligned, and their
// combinations), without a run-time dependency on libstdc++: the library must load into C
// programs too. On failure operator new follows the standard: call the new-handler while there
// is one, then throw std::bad_alloc (or return null for the nothrow forms). The handler and the
// throw come from the program's own C++ runtime, found with dlsym only on that rare path; the
// frames in between have unwind tables (-fasynchronous-unwind-tables), so the exception passes.
#include "alloc.h"
#include "os.h"
#include "report.h"

#include <cstddef>
#include <dlfcn.h>
#include <new>

namespace arena {
namespace {

using GetNewHandler = std::new_handler (*)();
using ThrowBadAlloc = void (*)();

std::new_handler current_new_handler() {
    auto get = reinterpret_cast<GetNewHandler>(dlsym(RTLD_DEFAULT, "_ZSt15get_new_handlerv"));
    return get != nullptr ? get() : nullptr;
}

[[noreturn]] ARENA_COLD void throw_bad_alloc() {
    auto thrower = reinterpret_cast<ThrowBadAlloc>(dlsym(RTLD_DEFAULT, "_ZSt17__throw_bad_allocv"));
    if (thrower != nullptr)
        thrower(); // does not return
    Msg()
        .str("arena: error: operator new: out of memory, and no C++ runtime to throw "
             "std::bad_alloc\n")
        .emit();
    os::abort_process();
}

/// The failure path of every operator new (the failed attempt is counted already): call the
/// new-handler and retry while there is one, then throw or return null.
ARENA_COLD void* new_failed(size_t n, size_t align, bool nothrow) {
    for (;;) {
        std::new_handler handler = current_new_handler();
        if (handler == nullptr) {
            if (nothrow)
                return nullptr;
            throw_bad_alloc();
        }
        handler();
        void* p = alloc_aligned<Api::New>(align, n);
        if (p != nullptr)
            return p;
    }
}

ARENA_FAST_PATH void* new_impl(size_t n, bool nothrow) {
    void* p = alloc<Api::New>(n);
    if (ARENA_UNLIKELY(p == nullptr))
        return new_failed(n, kMinAlign, nothrow);
    return p;
}

void* new_aligned(size_t n, std::align_val_t al, bool nothrow) {
    const size_t align = static_cast<size_t>(al);
    void* p = alloc_aligned<Api::New>(align, n);
    if (ARENA_UNLIKELY(p == nullptr))
        return new_failed(n, align, nothrow);
    return p;
}

ARENA_FAST_PATH void delete_impl(void* p) {
    dealloc<Api::Delete>(p);
}

} // namespace
} // namespace arena

#define ARENA_NEW_EXPORT __attribute__((visibility("default")))

using arena::delete_impl;
using arena::new_aligned;
using arena::new_impl;

ARENA_NEW_EXPORT void* operator new(size_t n) {
    return new_impl(n, false);
}
ARENA_NEW_EXPORT void* operator new[](size_t n) {
    return new_impl(n, false);
}
ARENA_NEW_EXPORT void* operator new(size_t n, const std::nothrow_t&) noexcept {
    return new_impl(n, true);
}
ARENA_NEW_EXPORT void* operator new[](size_t n, const std::nothrow_t&) noexcept {
    return new_impl(n, true);
}
ARENA_NEW_EXPORT void* operator new(size_t n, std::align_val_t al) {
    return new_aligned(n, al, false);
}
ARENA_NEW_EXPORT void* operator new[](size_t n, std::align_val_t al) {
    return new_aligned(n, al, false);
}
ARENA_NEW_EXPORT void* operator new(size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
    return new_aligned(n, al, true);
}
ARENA_NEW_EXPORT void* operator new[](size_t n, std::align_val_t al,
                                      const std::nothrow_t&) noexcept {
    return new_aligned(n, al, true);
}

ARENA_NEW_EXPORT void operator delete(void* p) noexcept {
    delete_impl(p);
}
ARENA_NEW_EXPORT void operator delete[](void* p) noexcept {
    delete_impl(p);
}
ARENA_NEW_EXPORT void operator delete(void* p, const std::nothrow_t&) noexcept {
    delete_impl(p);
}
ARENA_NEW_EXPORT void operator delete[](void* p, const std::nothrow_t&) noexcept {
    delete_impl(p);
}
ARENA_NEW_EXPORT void operator delete(void* p, size_t) noexcept {
    delete_impl(p);
}
ARENA_NEW_EXPORT void operator delete[](void* p, size_t) noexcept {
    delete_impl(p);
}
ARENA_NEW_EXPORT void operator delete(void* p, std::align_val_t) noexcept {
    delete_impl(p);
}
ARENA_NEW_EXPORT void operator delete[](void* p, std::align_val_t) noexcept {
    delete_impl(p);
}
ARENA_NEW_EXPORT void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    delete_impl(p);
}
ARENA_NEW_EXPORT void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    delete_impl(p);
}
ARENA_NEW_EXPORT void operator delete(void* p, size_t, std::align_val_t) noexcept {
    delete_impl(p);
}
ARENA_NEW_EXPORT void operator delete[](void* p, size_t, std::align_val_t) noexcept {
    delete_impl(p);
}
