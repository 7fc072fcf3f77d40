// SPDX-License-Identifier: MIT
// Symbolizer (profile.h) over elfutils' libdwfl: the objects a live process has mapped, as its
// /proc/<pid>/maps lists them when the Symbolizer is made (so PIE executables at their load
// address and libraries dlopen'ed by then), each read from its file (debug information from the
// file itself or the standard debuginfo paths). Nothing is read from the process's memory.
#include "profile.h"

#include <elfutils/libdwfl.h>

#include <cstdlib>
#include <cstring>
#include <cxxabi.h>
#include <unordered_map>

namespace arena::client::profile {
namespace {

/// Resolved addresses kept at most; past it the cache starts again (a reader that lives long,
/// cmond, never grows without bound).
constexpr size_t kMaxCached = 1 << 20;

char* g_debuginfo_path = nullptr; // libdwfl's default search path

const Dwfl_Callbacks kCallbacks = {
    .find_elf = dwfl_linux_proc_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .section_address = nullptr,
    .debuginfo_path = &g_debuginfo_path,
};

/// A C++ symbol demangled; anything else as it is.
std::string demangle(const char* name) {
    if (name == nullptr)
        return "";
    if (name[0] != '_' || name[1] != 'Z')
        return name;
    int status = 0;
    char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
    if (status != 0 || out == nullptr)
        return name;
    std::string s(out);
    free(out); // NOLINT(cppcoreguidelines-no-malloc): __cxa_demangle's buffer
    return s;
}

class DwflSymbolizer final : public Symbolizer {
public:
    explicit DwflSymbolizer(Dwfl* dwfl) : dwfl_(dwfl) {}
    DwflSymbolizer(const DwflSymbolizer&) = delete;
    DwflSymbolizer& operator=(const DwflSymbolizer&) = delete;
    ~DwflSymbolizer() override { dwfl_end(dwfl_); }

    Frame resolve(uint64_t return_address) override {
        if (const auto it = cache_.find(return_address); it != cache_.end())
            return it->second;
        if (cache_.size() >= kMaxCached)
            cache_.clear();
        return cache_.emplace(return_address, lookup(return_address)).first->second;
    }

private:
    Frame lookup(uint64_t return_address) const {
        Frame f;
        f.address = return_address;
        // The call instruction is before the return address: look that up (a call that is
        // the last instruction of a function returns into the next one).
        const Dwarf_Addr pc = return_address > 0 ? return_address - 1 : 0;
        Dwfl_Module* m = dwfl_addrmodule(dwfl_, pc);
        if (m == nullptr)
            return f;
        Dwarf_Addr start = 0;
        const char* name =
            dwfl_module_info(m, nullptr, &start, nullptr, nullptr, nullptr, nullptr, nullptr);
        f.module = name != nullptr ? name : "";
        Dwarf_Addr bias = 0;
        if (dwfl_module_getelf(m, &bias) != nullptr)
            f.module_offset = return_address - bias;
        else
            f.module_offset = return_address - start;
        f.function = demangle(dwfl_module_addrname(m, pc));
        if (Dwfl_Line* line = dwfl_module_getsrc(m, pc)) {
            int lineno = 0;
            const char* file = dwfl_lineinfo(line, nullptr, &lineno, nullptr, nullptr, nullptr);
            if (file != nullptr) {
                f.file = file;
                f.line = lineno;
            }
        }
        return f;
    }

    Dwfl* dwfl_;
    std::unordered_map<uint64_t, Frame> cache_;
};

} // namespace

std::unique_ptr<Symbolizer> Symbolizer::for_pid(int pid, std::string* error) {
    Dwfl* dwfl = dwfl_begin(&kCallbacks);
    if (dwfl == nullptr) {
        if (error != nullptr)
            *error = std::string("libdwfl: ") + dwfl_errmsg(-1);
        return nullptr;
    }
    dwfl_report_begin(dwfl);
    const int r = dwfl_linux_proc_report(dwfl, pid);
    // r > 0 is an errno (no such process, /proc/<pid>/maps not readable); r < 0 libdwfl's own.
    if (r != 0 || dwfl_report_end(dwfl, nullptr, nullptr) != 0) {
        if (error != nullptr)
            *error = "Cannot read the mappings of pid " + std::to_string(pid) + ": " +
                     (r > 0 ? strerror(r) : dwfl_errmsg(-1));
        dwfl_end(dwfl);
        return nullptr;
    }
    return std::make_unique<DwflSymbolizer>(dwfl);
}

} // namespace arena::client::profile
