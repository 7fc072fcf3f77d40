// SPDX-License-Identifier: MIT
// Stack capture with libgcc's unwinder (stack_capture.h).
#include "stack_capture.h"

#include "macros.h"

#include <unwind.h>

namespace arena::unwind {
namespace {

struct Walk {
    uintptr_t* out;
    unsigned max;
    unsigned skip; // frames still to skip, capture's own included
    unsigned n;
};

_Unwind_Reason_Code step(_Unwind_Context* ctx, void* arg) {
    auto* w = static_cast<Walk*>(arg);
    const uintptr_t ip = _Unwind_GetIP(ctx);
    if (ip == 0)
        return _URC_END_OF_STACK;
    if (w->skip > 0) {
        --w->skip;
        return _URC_NO_REASON;
    }
    w->out[w->n++] = ip;
    return w->n == w->max ? _URC_END_OF_STACK : _URC_NO_REASON;
}

} // namespace

ARENA_SLOW_PATH unsigned capture(uintptr_t* out, unsigned max, unsigned skip) {
    if (max == 0)
        return 0;
    Walk w{out, max, skip + 1, 0};
    _Unwind_Backtrace(step, &w);
    return w.n;
}

} // namespace arena::unwind
