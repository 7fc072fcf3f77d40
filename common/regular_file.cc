// SPDX-License-Identifier: MIT
// See regular_file.h.
#include "regular_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace cmon {

namespace {

FileError not_regular(mode_t mode) {
    return FileError(std::string("not a regular file (") + file_kind(mode) + ")", false);
}

std::string show_limit(std::size_t limit) {
    if (limit % (std::size_t{1} << 20) == 0) {
        return std::to_string(limit / (std::size_t{1} << 20)) + " MiB";
    }
    if (limit % 1024 == 0) {
        return std::to_string(limit / 1024) + " KiB";
    }
    return std::to_string(limit) + " bytes";
}

} // namespace

const char* file_kind(mode_t mode) {
    switch (mode & S_IFMT) {
    case S_IFREG:
        return "a regular file";
    case S_IFDIR:
        return "a directory";
    case S_IFIFO:
        return "a FIFO";
    case S_IFCHR:
        return "a character device";
    case S_IFBLK:
        return "a block device";
    case S_IFSOCK:
        return "a socket";
    default:
        return "of an unknown type";
    }
}

RegularFile::RegularFile(const std::string& path) {
    if (::stat(path.c_str(), &st_) == 0 && !S_ISREG(st_.st_mode)) {
        throw not_regular(st_.st_mode);
    }
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd_ < 0) {
        throw FileError(std::string("cannot open: ") + std::strerror(errno), true);
    }
    if (::fstat(fd_, &st_) != 0) {
        const int err = errno;
        ::close(fd_);
        throw FileError(std::string("cannot stat: ") + std::strerror(err), false);
    }
    if (!S_ISREG(st_.st_mode)) {
        ::close(fd_);
        throw not_regular(st_.st_mode);
    }
}

RegularFile::~RegularFile() {
    ::close(fd_);
}

std::size_t RegularFile::read_into(char* buf, std::size_t size) {
    std::size_t len = 0;
    while (len < size) {
        const ssize_t n = ::read(fd_, buf + len, size - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            throw FileError(std::string("read error: ") + std::strerror(errno), false);
        }
        if (n == 0) {
            break;
        }
        len += static_cast<std::size_t>(n);
    }
    return len;
}

void RegularFile::read_all(std::string& out, std::size_t limit) {
    out.assign(limit + 1, '\0');
    const std::size_t n = read_into(out.data(), out.size());
    if (n > limit) {
        throw FileError("larger than " + show_limit(limit), false);
    }
    out.resize(n);
}

} // namespace cmon
