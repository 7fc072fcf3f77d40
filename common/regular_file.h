// SPDX-License-Identifier: MIT
// Opening the files an operator names (configuration, keys, certificates): only a regular file
// is opened, and reading it is bounded whatever it holds.
//
// Opening a FIFO waits for a writer (start-up would hang), opening a device can have effects of
// its own, and a directory or an endless file must not be read into memory. So the name is
// looked at before it is opened, opened with O_NONBLOCK (a name swapped for a FIFO after the
// look still returns at once) and checked again through the descriptor. Symlinks are followed:
// a secret mounted as a symlink to a file is fine; what counts is the file they lead to.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <sys/stat.h>

namespace cmon {

// What went wrong, without the file's name: callers prefix their own ("key file 'x': ").
class FileError : public std::runtime_error {
public:
    FileError(const std::string& what, bool at_open)
        : std::runtime_error(what), at_open_(at_open) {}
    // True when the name could not be opened at all (missing, no permission): callers may add
    // how to create the file.
    bool at_open() const { return at_open_; }

private:
    bool at_open_;
};

class RegularFile {
public:
    // Throws FileError: "not a regular file (a FIFO)", "cannot open: <strerror>", ...
    explicit RegularFile(const std::string& path);
    ~RegularFile();
    RegularFile(const RegularFile&) = delete;
    RegularFile& operator=(const RegularFile&) = delete;

    const struct stat& status() const { return st_; }

    // Reads until `size` bytes are in buf or the file ends; returns the count. Throws FileError
    // on a read error.
    std::size_t read_into(char* buf, std::size_t size);

    // The whole file into `out`; throws FileError("larger than <limit>") when it holds more
    // than `limit` bytes (at most limit + 1 are read). `out` is the caller's so that a secret
    // can be cleansed on every way out: out.size() covers every byte written to it.
    void read_all(std::string& out, std::size_t limit);

private:
    int fd_ = -1;
    struct stat st_ {};
};

// A phrase for a file type, for messages: "a directory", "a FIFO", ...
const char* file_kind(mode_t mode);

} // namespace cmon
