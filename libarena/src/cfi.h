// SPDX-License-Identifier: MIT
// DWARF call-frame information for the fast stack walk (stack_capture.cc), x86-64 only: finds the
// FDE of a pc through _dl_find_object (lock-free, no dynamic-loader lock, no allocation) and the
// binary-search table of the object's .eh_frame_hdr, then runs the CIE's and the FDE's
// instructions up to the pc and reduces the row to the few facts the walk needs: where the CFA
// is (rsp or rbp plus an offset), that the return address is at CFA-8, and where rbp was saved.
// Anything else (a CFA expression as in PLT stubs, a signal frame, registers saved in other
// registers, an encoding it does not know) gives Kind::Unknown, and the caller hands the rest of
// the stack to libgcc. Reads only the object's mapped unwind tables; allocates nothing.
#pragma once

#include <cstdint>

namespace arena::cfi {

enum class Kind : uint8_t {
    Unknown, // not understood (or no FDE): let libgcc walk from here
    End,     // the outermost frame: the return address is undefined (_start, clone)
    Rsp,     // CFA = rsp + cfa_off
    Rbp,     // CFA = rbp + cfa_off
};

/// How to go from a frame to its caller's, at one pc. The return address is at CFA-8 whenever
/// kind is Rsp or Rbp; rbp was saved at CFA + rbp_off, or is unchanged when rbp_off is 0.
struct Rule {
    Kind kind = Kind::Unknown;
    int32_t cfa_off = 0;
    int32_t rbp_off = 0;
};

/// The rule of the row that covers the instruction before `ra` (a return address, or any pc just
/// after an instruction of the frame's function): rows at locations below ra, as libgcc reads them
/// for a frame that is not a signal frame.
Rule rule_for(uintptr_t ra);

} // namespace arena::cfi
