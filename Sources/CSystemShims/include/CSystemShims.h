#ifndef CSYSTEMSHIMS_H
#define CSYSTEMSHIMS_H

/* Linux calls and macros that Swift cannot reach directly. _GNU_SOURCE is defined in the .c file
   only: defining it here would change Glibc's Swift module. Each function is named cs_ plus the
   exact C name it stands for. */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <sys/sendfile.h>
#include <sys/uio.h>
#include <sys/random.h>
#include <sys/auxv.h>

/* CMSG_* macros. */
size_t cs_CMSG_SPACE(size_t length);
size_t cs_CMSG_LEN(size_t length);
struct cmsghdr *cs_CMSG_FIRSTHDR(const struct msghdr *message);
struct cmsghdr *cs_CMSG_NXTHDR(const struct msghdr *message, const struct cmsghdr *header);
unsigned char *cs_CMSG_DATA(const struct cmsghdr *header);

/* _GNU_SOURCE and raw-syscall APIs. */
int cs_accept4(int socket, struct sockaddr *address, socklen_t *length, int flags);
int cs_pidfd_open(pid_t pid, unsigned int flags);
int cs_pidfd_send_signal(int pidfd, int signal);
int cs_pidfd_getfd(int pidfd, int targetfd, unsigned int flags);
int cs_prctl_set_pdeathsig(int signal);
int cs_prctl_set_name(const char *name);
/* Lowers the calling thread's (not the process's) scheduling priority: nice value `niceness`. */
int cs_set_thread_niceness(int niceness);
/* A non-blocking, close-on-exec eventfd counting from 0. */
int cs_eventfd(void);
/* glibc's malloc_trim(0): free memory in every arena goes back to the system. */
int cs_malloc_trim(void);
int cs_prctl_set_child_subreaper(void);
int cs_openat2(int directory, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);
int cs_memfd_create(const char *name, unsigned int flags);

/* Counters shared between processes through a MAP_SHARED mapping (the listeners' admissions). */
int64_t cs_atomic_add(int64_t *counter, int64_t delta);
int64_t cs_atomic_load(const int64_t *counter);
void cs_atomic_store(int64_t *counter, int64_t value);
/* Attaches to a listening socket's SO_REUSEPORT group a classic BPF program that picks the group's
   socket by a hash of the client's address alone (IPv4, or the IPv6 address's four words folded), so
   every connection from one address reaches the same socket of the `groups` there are. */
int cs_attach_reuseport_address_hash(int socket, unsigned int groups);

int cs_close_range(unsigned int first, unsigned int last, unsigned int flags);
int cs_posix_spawnattr_setflags_setsid(posix_spawnattr_t *attributes, short flags);
/* After the dup2s, close every other fd in the child (glibc 2.34): nothing inherited without
   close-on-exec (from whoever started us) leaks into a process we start. */
int cs_posix_spawn_file_actions_addclosefrom(posix_spawn_file_actions_t *actions, int from);
int cs_signalfd(int fd, const sigset_t *mask, int flags);
int cs_sigprocmask_block_all(sigset_t *previous);
int cs_sigprocmask_unblock_all(void);
int cs_pipe2(int fds[2], int flags);

extern const uint64_t cs_RESOLVE_BENEATH;
extern const uint64_t cs_RESOLVE_NO_MAGICLINKS;
extern const uint64_t cs_RESOLVE_NO_SYMLINKS;
extern const int cs_O_PATH;
extern const int cs_O_NOFOLLOW;
extern const int cs_O_DIRECTORY;
extern const int cs_O_CLOEXEC;
extern const int cs_O_NONBLOCK;
extern const int cs_SOCK_NONBLOCK;
extern const int cs_SOCK_CLOEXEC;
extern const int cs_SFD_NONBLOCK;
extern const int cs_SFD_CLOEXEC;
extern const int cs_MFD_CLOEXEC;
extern const int cs_MSG_CMSG_CLOEXEC;
extern const int cs_SCM_RIGHTS;
extern const int cs_SO_REUSEPORT;
extern const int cs_TCP_DEFER_ACCEPT;
extern const int cs_MSG_MORE;
extern const int cs_MSG_PEEK;
extern const int cs_MSG_NOSIGNAL;

/* signalfd_siginfo fields we read, without depending on the struct's Swift import. */
uint32_t cs_signalfd_siginfo_signo(const void *info);
size_t cs_signalfd_siginfo_size(void);

#endif
