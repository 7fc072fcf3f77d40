// SPDX-License-Identifier: MIT
// What the profile formats (profile_format.cc: table, JSON, folded; pprof.cc) share: frames
// resolved or not, their one-line names, and the stacks in a chosen order. Internal to the
// client library.
#pragma once

#include "profile.h"

#include <string>
#include <vector>

namespace arena::client::profile {

/// The name shown for slot 0's stack, which has no frames.
inline constexpr const char* kOtherStacks = "[other stacks]";

/// `address` resolved by `sym`, or only its address when `sym` is null.
Frame resolve_frame(Symbolizer* sym, uint64_t address);

/// A frame's function, or where it is when that is unknown: "libfoo.so+0x1a2b" (the module's
/// file name), or "0x7f12..." without a module.
std::string frame_label(const Frame& f);

/// "0x" and lowercase hex digits.
std::string hex(uint64_t v);

/// A stack's value in `order`: live bytes, allocated bytes, or allocated objects.
double value_of(const Stack& s, Order order);

/// The stacks of `p` by value_of descending (ties: by allocated bytes, then by frames).
std::vector<const Stack*> ordered(const Profile& p, Order order);

} // namespace arena::client::profile
