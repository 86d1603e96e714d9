// glibc's spawn and pipe extensions that Swift's Glibc module leaves out (they need
// _GNU_SOURCE), for GraftTestSupport's ChildProcess.
#ifndef GRAFT_CSPAWN_H
#define GRAFT_CSPAWN_H

#include <spawn.h>

/// posix_spawn_file_actions_addclosefrom_np: the child closes every descriptor >= from.
int graft_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from);
/// posix_spawn_file_actions_addchdir_np: the child's working directory.
int graft_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path);
/// POSIX_SPAWN_SETSID: the child starts a session of its own.
short graft_spawn_setsid_flag(void);
/// pipe2(fds, O_CLOEXEC).
int graft_pipe_cloexec(int fds[2]);

#endif
