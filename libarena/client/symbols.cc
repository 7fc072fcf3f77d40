// SPDX-License-Identifier: MIT
// Symbolizer (profile.h) over elfutils' libdwfl: the objects a live process has mapped, as its
// /proc/<pid>/maps lists them when the Symbolizer is made (so PIE executables at their load
// address and libraries dlopen'ed by then), each read from its file (debug information from the
// file itself or the standard debuginfo paths, never from a debuginfod server). Only what has no
// file (the vDSO, a deleted file) is read from the process's memory, by libdwfl.
#include "profile.h"

#include <elfutils/libdwfl.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cxxabi.h>
#include <unordered_map>
#include <utility>

namespace arena::client::profile {
namespace {

/// Resolved addresses kept at most; past it the cache starts again (a reader that lives long,
/// cmond, never grows without bound).
constexpr size_t kMaxCached = 1 << 20;

/// Bytes of /proc/<pid>/maps read at most to tell whether its files changed.
constexpr size_t kMaxMapsBytes = 4 << 20;

char* g_debuginfo_path = nullptr; // libdwfl's default search path

/// Separate debug information, looked for on this machine only. dwfl_standard_find_debuginfo
/// looks by build id, then by debuglink in the standard paths, and then asks the debuginfod
/// servers $DEBUGINFOD_URLS names (writing to $HOME/.cache): a reader must neither send the
/// build ids of the processes it profiles over the network nor wait for it. So with servers
/// named, only the build-id directories (/usr/lib/debug/.build-id, where -dbgsym packages put
/// them) are searched.
int find_debuginfo(Dwfl_Module* mod, void** userdata, const char* modname, Dwarf_Addr base,
                   const char* file_name, const char* debuglink_file, GElf_Word debuglink_crc,
                   char** debuginfo_file_name) {
    const char* servers = getenv("DEBUGINFOD_URLS");
    const auto find = servers != nullptr && *servers != '\0' ? dwfl_build_id_find_debuginfo
                                                             : dwfl_standard_find_debuginfo;
    return find(mod, userdata, modname, base, file_name, debuglink_file, debuglink_crc,
                debuginfo_file_name);
}

const Dwfl_Callbacks kCallbacks = {
    .find_elf = dwfl_linux_proc_find_elf,
    .find_debuginfo = find_debuginfo,
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

/// The code of `pid` in files (its executable mappings of files, as /proc/<pid>/maps lists
/// them): what the Symbolizer was made from. Anonymous mappings (the heap growing) and data are
/// left out.
std::string file_mappings(int pid) {
    const std::string path = "/proc/" + std::to_string(pid) + "/maps";
    FILE* f = fopen(path.c_str(), "re");
    if (f == nullptr)
        return "";
    std::string out;
    char line[4096 + 256];
    size_t read = 0;
    while (read < kMaxMapsBytes && fgets(line, sizeof line, f) != nullptr) {
        read += strlen(line);
        // start-end perms offset dev inode path; code only ("r-xp": a reader symbolizing
        // itself maps ELF files for reading, and that is no change of its code)
        const char* perms = strchr(line, ' ');
        if (perms != nullptr && perms[3] == 'x' && strchr(line, '/') != nullptr)
            out += line;
    }
    fclose(f);
    return out;
}

class DwflSymbolizer final : public Symbolizer {
public:
    DwflSymbolizer(Dwfl* dwfl, int pid, std::string mappings)
        : dwfl_(dwfl), pid_(pid), mappings_(std::move(mappings)) {}
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

    bool stale() const override { return file_mappings(pid_) != mappings_; }

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
    int pid_;
    std::string mappings_; // file_mappings() when made
    std::unordered_map<uint64_t, Frame> cache_;
};

} // namespace

std::unique_ptr<Symbolizer> Symbolizer::for_pid(int pid, std::string* error) {
    // Before libdwfl reads the maps: a change in between makes stale() true, never false.
    std::string mappings = file_mappings(pid);
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
    return std::make_unique<DwflSymbolizer>(dwfl, pid, std::move(mappings));
}

} // namespace arena::client::profile
