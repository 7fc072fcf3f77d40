// SPDX-License-Identifier: MIT
// fork(): what libarena does about it (fork.cc explains the design).
#pragma once

namespace arena {

/// Registers the fork handler (pthread_atfork: a child handler only). Called once, from
/// initialisation, after the library is ready (pthread_atfork may allocate).
void install_fork_handler();

} // namespace arena
