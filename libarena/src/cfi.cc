// SPDX-License-Identifier: MIT
// The FDE of a pc and the CFI interpreter (cfi.h).
#include "cfi.h"

#if defined(__x86_64__)

#    include <cstring>
#    include <dlfcn.h>

namespace arena::cfi {
namespace {

// DWARF register numbers of x86-64.
constexpr uint64_t kRbp = 6;
constexpr uint64_t kRsp = 7;
constexpr uint64_t kRa = 16;

// Pointer encodings (DW_EH_PE_*).
constexpr uint8_t kPeOmit = 0xff;
constexpr uint8_t kPeFormat = 0x0f;
constexpr uint8_t kPeAbsptr = 0x00;
constexpr uint8_t kPeUleb = 0x01;
constexpr uint8_t kPeUdata2 = 0x02;
constexpr uint8_t kPeUdata4 = 0x03;
constexpr uint8_t kPeUdata8 = 0x04;
constexpr uint8_t kPeSleb = 0x09;
constexpr uint8_t kPeSdata2 = 0x0a;
constexpr uint8_t kPeSdata4 = 0x0b;
constexpr uint8_t kPeSdata8 = 0x0c;
constexpr uint8_t kPeApply = 0x70;
constexpr uint8_t kPePcrel = 0x10;
constexpr uint8_t kPeDatarel = 0x30;
constexpr uint8_t kPeIndirect = 0x80;

/// A cursor over unwind tables in mapped memory; `ok` turns false on anything it cannot read.
struct Reader {
    const uint8_t* p;
    const uint8_t* end;
    bool ok = true;

    bool has(uintptr_t n) const { return ok && static_cast<uintptr_t>(end - p) >= n; }
    template <typename T>
    T fixed() {
        T v{};
        if (!has(sizeof(T))) {
            ok = false;
            return v;
        }
        std::memcpy(&v, p, sizeof(T));
        p += sizeof(T);
        return v;
    }
    uint8_t u8() { return fixed<uint8_t>(); }
    uint64_t uleb() {
        uint64_t v = 0;
        for (unsigned shift = 0; has(1); shift += 7) {
            const uint8_t b = *p++;
            if (shift < 64)
                v |= static_cast<uint64_t>(b & 0x7f) << shift;
            if ((b & 0x80) == 0)
                return v;
        }
        ok = false;
        return 0;
    }
    int64_t sleb() {
        uint64_t v = 0;
        for (unsigned shift = 0; has(1);) {
            const uint8_t b = *p++;
            if (shift < 64)
                v |= static_cast<uint64_t>(b & 0x7f) << shift;
            shift += 7;
            if ((b & 0x80) == 0) {
                if (shift < 64 && (b & 0x40) != 0)
                    v |= ~uint64_t{0} << shift;
                return static_cast<int64_t>(v);
            }
        }
        ok = false;
        return 0;
    }
    void skip(uint64_t n) {
        if (!has(n))
            ok = false;
        else
            p += n;
    }
    /// A pointer in encoding `enc`; `data` is the base of datarel (the .eh_frame_hdr).
    /// Application of pc- or data-relative is skipped when `value_only` (an FDE's range).
    uintptr_t pointer(uint8_t enc, uintptr_t data, bool value_only) {
        const auto at = reinterpret_cast<uintptr_t>(p);
        uint64_t v = 0;
        switch (enc & kPeFormat) {
        case kPeAbsptr:
        case kPeUdata8:
        case kPeSdata8:
            v = fixed<uint64_t>();
            break;
        case kPeUleb:
            v = uleb();
            break;
        case kPeUdata2:
            v = fixed<uint16_t>();
            break;
        case kPeUdata4:
            v = fixed<uint32_t>();
            break;
        case kPeSleb:
            v = static_cast<uint64_t>(sleb());
            break;
        case kPeSdata2:
            v = static_cast<uint64_t>(static_cast<int64_t>(fixed<int16_t>()));
            break;
        case kPeSdata4:
            v = static_cast<uint64_t>(static_cast<int64_t>(fixed<int32_t>()));
            break;
        default:
            ok = false;
            return 0;
        }
        if ((enc & kPeIndirect) != 0 && !value_only) {
            ok = false; // never used for an FDE's location
            return 0;
        }
        if (value_only)
            return v;
        switch (enc & kPeApply) {
        case 0:
            return v;
        case kPePcrel:
            return v + at;
        case kPeDatarel:
            return v + data;
        default:
            ok = false; // textrel, funcrel, aligned: not in x86-64 .eh_frame
            return 0;
        }
    }
};

/// A register's rule, as far as the walk cares.
enum class How : uint8_t { Same, Offset, Other };
struct Reg {
    How how = How::Same;
    int64_t off = 0; // saved at CFA + off
};

struct Row {
    uint64_t cfa_reg = kRsp;
    int64_t cfa_off = 0;
    bool cfa_expr = false;
    Reg rbp, rsp, ra;
    bool ra_undefined = false;
};

struct Cie {
    uint64_t code_align = 1;
    int64_t data_align = 1;
    uint64_t ra_reg = kRa;
    uint8_t fde_enc = kPeAbsptr;
    bool signal = false;
    bool z = false; // FDEs carry an augmentation length
    const uint8_t* insns = nullptr;
    const uint8_t* end = nullptr;
};

constexpr unsigned kStateDepth = 8;
constexpr unsigned kMaxInsns = 100000; // a bound on any table, however odd

/// The interpreter of CFA instructions: the row being built, and the remembered ones.
class Interp {
public:
    Interp(const Cie& cie, const Row& initial, Row& row)
        : cie_(cie), initial_(initial), row_(row) {}

    /// Runs the instructions [r.p, r.end), starting at location loc, up to the first row whose
    /// location is not below ra. False on anything not understood.
    bool run(Reader r, uintptr_t loc, uintptr_t ra) {
        for (unsigned n = 0; r.p < r.end && loc < ra; ++n) {
            if (n == kMaxInsns)
                return false;
            const uint8_t op = r.u8();
            bool ok = true;
            switch (op >> 6) {
            case 1: // DW_CFA_advance_loc
                loc += (op & 0x3f) * cie_.code_align;
                break;
            case 2: // DW_CFA_offset
                set_offset(op & 0x3f, static_cast<int64_t>(r.uleb()) * cie_.data_align);
                break;
            case 3: // DW_CFA_restore
                restore(op & 0x3f);
                break;
            default:
                ok = op <= 0x04 ? advance(r, op, loc) : cfa_op(r, op) || reg_op(r, op);
                break;
            }
            if (!ok || !r.ok)
                return false;
        }
        return r.ok;
    }

private:
    const Cie& cie_;
    const Row& initial_;
    Row& row_;
    Row stack_[kStateDepth];
    unsigned depth_ = 0;

    Reg* reg_of(uint64_t reg) {
        switch (reg) {
        case kRbp:
            return &row_.rbp;
        case kRsp:
            return &row_.rsp;
        case kRa:
            return &row_.ra;
        default:
            return nullptr;
        }
    }
    void set_offset(uint64_t reg, int64_t off) {
        if (Reg* g = reg_of(reg)) {
            g->how = How::Offset;
            g->off = off;
            if (reg == kRa)
                row_.ra_undefined = false;
        }
    }
    void set_how(uint64_t reg, How how) {
        if (Reg* g = reg_of(reg)) {
            g->how = how;
            if (reg == kRa)
                row_.ra_undefined = false;
        }
    }
    void restore(uint64_t reg) {
        if (Reg* g = reg_of(reg)) {
            *g = reg == kRbp ? initial_.rbp : reg == kRsp ? initial_.rsp : initial_.ra;
            if (reg == kRa)
                row_.ra_undefined = initial_.ra_undefined;
        }
    }
    void undefine(uint64_t reg) {
        if (reg == kRa)
            row_.ra_undefined = true;
        else if (reg == kRbp)
            row_.rbp.how = How::Same; // libgcc leaves an undefined register's value as it was
        else if (reg == kRsp)
            row_.rsp.how = How::Other;
    }

    /// nop and advance_loc1/2/4 (op 0 to 4; set_loc, op 1, is not understood).
    bool advance(Reader& r, uint8_t op, uintptr_t& loc) const {
        switch (op) {
        case 0x00:
            return true;
        case 0x02:
            loc += r.fixed<uint8_t>() * cie_.code_align;
            return true;
        case 0x03:
            loc += r.fixed<uint16_t>() * cie_.code_align;
            return true;
        case 0x04:
            loc += r.fixed<uint32_t>() * cie_.code_align;
            return true;
        default:
            return false;
        }
    }

    /// The instructions that define the CFA, and remember/restore_state. False for any other op.
    bool cfa_op(Reader& r, uint8_t op) {
        switch (op) {
        case 0x0a: // remember_state
            if (depth_ == kStateDepth) {
                r.ok = false;
                return true;
            }
            stack_[depth_++] = row_;
            return true;
        case 0x0b: // restore_state: the registers and the CFA rule together, as libgcc does
            if (depth_ == 0) {
                r.ok = false;
                return true;
            }
            row_ = stack_[--depth_];
            return true;
        case 0x0c: // def_cfa
            row_.cfa_reg = r.uleb();
            row_.cfa_off = static_cast<int64_t>(r.uleb());
            row_.cfa_expr = false;
            return true;
        case 0x0d: // def_cfa_register
            row_.cfa_reg = r.uleb();
            row_.cfa_expr = false;
            return true;
        case 0x0e: // def_cfa_offset
            row_.cfa_off = static_cast<int64_t>(r.uleb());
            return true;
        case 0x0f: // def_cfa_expression
            row_.cfa_expr = true;
            r.skip(r.uleb());
            return true;
        case 0x12: // def_cfa_sf
            row_.cfa_reg = r.uleb();
            row_.cfa_off = r.sleb() * cie_.data_align;
            row_.cfa_expr = false;
            return true;
        case 0x13: // def_cfa_offset_sf
            row_.cfa_off = r.sleb() * cie_.data_align;
            return true;
        case 0x2e: // GNU_args_size
            r.uleb();
            return true;
        default:
            return false;
        }
    }

    /// The instructions that say where a register was saved. False for any op not understood.
    bool reg_op(Reader& r, uint8_t op) {
        const uint64_t reg = r.uleb();
        switch (op) {
        case 0x05: // offset_extended
            set_offset(reg, static_cast<int64_t>(r.uleb()) * cie_.data_align);
            return true;
        case 0x06: // restore_extended
            restore(reg);
            return true;
        case 0x07: // undefined
            undefine(reg);
            return true;
        case 0x08: // same_value
            set_how(reg, How::Same);
            return true;
        case 0x09: // register
            r.uleb();
            set_how(reg, How::Other);
            return true;
        case 0x10: // expression
        case 0x16: // val_expression
            r.skip(r.uleb());
            set_how(reg, How::Other);
            return true;
        case 0x11: // offset_extended_sf
            set_offset(reg, r.sleb() * cie_.data_align);
            return true;
        case 0x14: // val_offset
            r.uleb();
            set_how(reg, How::Other);
            return true;
        case 0x15: // val_offset_sf
            r.sleb();
            set_how(reg, How::Other);
            return true;
        case 0x2f: // GNU_negative_offset_extended
            set_offset(reg, -static_cast<int64_t>(r.uleb()) * cie_.data_align);
            return true;
        default: // set_loc, GNU_window_save, vendor extensions
            return false;
        }
    }
};

/// Parses the CIE at p (its length field). False on anything not understood.
bool parse_cie(const uint8_t* p, Cie& cie) {
    uint32_t len32 = 0;
    std::memcpy(&len32, p, 4);
    if (len32 == 0 || len32 == 0xffffffffU)
        return false; // 64-bit DWARF: not produced on x86-64 Linux
    Reader r{p + 4, p + 4 + len32};
    if (r.fixed<uint32_t>() != 0) // the CIE id of .eh_frame
        return false;
    const uint8_t version = r.u8();
    if (version != 1 && version != 3)
        return false;
    const auto* aug = reinterpret_cast<const char*>(r.p);
    const void* nul = std::memchr(r.p, 0, static_cast<size_t>(r.end - r.p));
    if (nul == nullptr)
        return false;
    r.p = static_cast<const uint8_t*>(nul) + 1;
    cie.code_align = r.uleb();
    cie.data_align = r.sleb();
    cie.ra_reg = version == 1 ? r.u8() : r.uleb();
    if (aug[0] != '\0') {
        if (aug[0] != 'z')
            return false; // "eh" and other old forms
        cie.z = true;
        const uint64_t aug_len = r.uleb();
        if (!r.has(aug_len))
            return false;
        Reader a{r.p, r.p + aug_len};
        for (const char* c = aug + 1; *c != '\0'; ++c) {
            switch (*c) {
            case 'R':
                cie.fde_enc = a.u8();
                break;
            case 'L':
                a.u8();
                break;
            case 'P': {
                const uint8_t enc = a.u8();
                if ((enc & kPeApply) == 0x50 || enc == kPeOmit) // aligned: not in .eh_frame
                    return false;
                a.pointer(enc & ~kPeIndirect & kPeFormat, 0, true); // skipped, not applied
                break;
            }
            case 'S':
                cie.signal = true;
                break;
            default: // 'B' and vendor letters: the length lets us skip, but the meaning is unknown
                return false;
            }
            if (!a.ok)
                return false;
        }
        r.p += aug_len;
    }
    cie.insns = r.p;
    cie.end = r.end;
    return r.ok && cie.ra_reg == kRa;
}

/// The FDE of pc in the object's .eh_frame_hdr, or nullptr.
const uint8_t* find_fde(const uint8_t* hdr, uintptr_t pc) {
    if (hdr == nullptr || hdr[0] != 1)
        return nullptr;
    const uint8_t ptr_enc = hdr[1];
    const uint8_t count_enc = hdr[2];
    const uint8_t table_enc = hdr[3];
    // The sorted table: pairs of datarel sdata4 (location, FDE), as ld and lld write it.
    if (table_enc != (kPeDatarel | kPeSdata4) || count_enc == kPeOmit)
        return nullptr;
    const auto base = reinterpret_cast<uintptr_t>(hdr);
    Reader r{hdr + 4, hdr + 4 + 32};
    r.pointer(ptr_enc, base, false);
    const uint64_t count = r.pointer(count_enc, base, false);
    if (!r.ok || count == 0)
        return nullptr;
    const auto* table = reinterpret_cast<const int32_t*>(r.p);
    // The last entry whose location is at or below pc.
    uint64_t lo = 0;
    uint64_t hi = count;
    while (hi - lo > 1) {
        const uint64_t mid = lo + (hi - lo) / 2;
        int32_t loc = 0;
        std::memcpy(&loc, table + 2 * mid, 4);
        if (base + static_cast<int64_t>(loc) <= pc)
            lo = mid;
        else
            hi = mid;
    }
    int32_t loc = 0;
    int32_t fde = 0;
    std::memcpy(&loc, table + 2 * lo, 4);
    std::memcpy(&fde, table + 2 * lo + 1, 4);
    if (base + static_cast<int64_t>(loc) > pc)
        return nullptr;
    return reinterpret_cast<const uint8_t*>(base + static_cast<int64_t>(fde));
}

} // namespace

Rule rule_for(uintptr_t ra) {
    Rule rule;
    const uintptr_t pc = ra - 1;
    dl_find_object obj{};
    if (_dl_find_object(reinterpret_cast<void*>(pc), &obj) != 0)
        return rule;
    const auto* hdr = static_cast<const uint8_t*>(obj.dlfo_eh_frame);
    const uint8_t* fde = find_fde(hdr, pc);
    if (fde == nullptr)
        return rule;
    uint32_t len32 = 0;
    std::memcpy(&len32, fde, 4);
    if (len32 == 0 || len32 == 0xffffffffU)
        return rule;
    Reader r{fde + 4, fde + 4 + len32};
    const uint8_t* id_at = r.p;
    const uint32_t cie_off = r.fixed<uint32_t>();
    if (!r.ok || cie_off == 0)
        return rule; // a CIE, not an FDE
    Cie cie;
    if (!parse_cie(id_at - cie_off, cie) || cie.signal)
        return rule;
    const uintptr_t begin = r.pointer(cie.fde_enc, reinterpret_cast<uintptr_t>(hdr), false);
    const uintptr_t range = r.pointer(cie.fde_enc & kPeFormat, 0, true);
    if (!r.ok || pc < begin || pc - begin >= range)
        return rule;
    if (cie.z)
        r.skip(r.uleb());
    if (!r.ok)
        return rule;
    Row row;
    const Row blank;
    if (!Interp(cie, blank, row).run(Reader{cie.insns, cie.end}, 0, ~uintptr_t{0}))
        return rule;
    const Row initial = row;
    if (!Interp(cie, initial, row).run(r, begin, ra))
        return rule;
    if (row.ra_undefined) {
        rule.kind = Kind::End;
        return rule;
    }
    if (row.cfa_expr || (row.cfa_reg != kRsp && row.cfa_reg != kRbp))
        return rule;
    if (row.ra.how != How::Offset || row.ra.off != -8 || row.rsp.how != How::Same)
        return rule;
    if (row.rbp.how == How::Other)
        return rule;
    if (row.cfa_off < INT32_MIN || row.cfa_off > INT32_MAX)
        return rule;
    if (row.rbp.how == How::Offset &&
        (row.rbp.off < INT32_MIN || row.rbp.off > INT32_MAX || row.rbp.off == 0))
        return rule;
    rule.cfa_off = static_cast<int32_t>(row.cfa_off);
    rule.rbp_off = row.rbp.how == How::Offset ? static_cast<int32_t>(row.rbp.off) : 0;
    rule.kind = row.cfa_reg == kRsp ? Kind::Rsp : Kind::Rbp;
    return rule;
}

} // namespace arena::cfi

#endif // __x86_64__
