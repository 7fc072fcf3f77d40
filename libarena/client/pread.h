// SPDX-License-Identifier: MIT
// pread until `n` bytes, the end of the file or an error: how the readers copy a page or a
// profile region (never mmap: a file cut under them cannot raise SIGBUS). Internal to the client
// library.
#pragma once

#include <cerrno>
#include <cstddef>
#include <sys/types.h>
#include <unistd.h>

namespace arena::client {

/// Reads up to `n` bytes at `offset` of `fd`, retrying after EINTR and short reads. Returns the
/// count (less than `n` only at the end of the file), or -1 with errno set.
inline ssize_t pread_full(int fd, void* to, size_t n, off_t offset) {
    auto* dst = static_cast<unsigned char*>(to);
    size_t done = 0;
    while (done < n) {
        const ssize_t r = pread(fd, dst + done, n - done, offset + static_cast<off_t>(done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        done += static_cast<size_t>(r);
    }
    return static_cast<ssize_t>(done);
}

} // namespace arena::client
