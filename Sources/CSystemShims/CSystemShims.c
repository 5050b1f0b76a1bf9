#define _GNU_SOURCE 1
#include "CSystemShims.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <malloc.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <string.h>
#include <unistd.h>
#include <linux/filter.h>

size_t cs_CMSG_SPACE(size_t length) { return CMSG_SPACE(length); }
size_t cs_CMSG_LEN(size_t length) { return CMSG_LEN(length); }
struct cmsghdr *cs_CMSG_FIRSTHDR(const struct msghdr *message) { return CMSG_FIRSTHDR(message); }
struct cmsghdr *cs_CMSG_NXTHDR(const struct msghdr *message, const struct cmsghdr *header) {
    return CMSG_NXTHDR((struct msghdr *)message, (struct cmsghdr *)header);
}
unsigned char *cs_CMSG_DATA(const struct cmsghdr *header) { return CMSG_DATA((struct cmsghdr *)header); }

int cs_accept4(int socket, struct sockaddr *address, socklen_t *length, int flags) {
    return accept4(socket, address, length, flags);
}
int cs_pidfd_open(pid_t pid, unsigned int flags) { return (int)syscall(SYS_pidfd_open, pid, flags); }
int cs_pidfd_send_signal(int pidfd, int signal) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, signal, NULL, 0);
}
int cs_pidfd_getfd(int pidfd, int targetfd, unsigned int flags) {
    return (int)syscall(SYS_pidfd_getfd, pidfd, targetfd, flags);
}
int cs_prctl_set_pdeathsig(int signal) { return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0, 0, 0); }
int cs_prctl_set_name(const char *name) { return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }
int cs_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
int cs_malloc_trim(void) { return malloc_trim(0); }
int cs_set_thread_niceness(int niceness) { return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), niceness); }
int cs_prctl_set_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1UL, 0, 0, 0); }
int cs_openat2(int directory, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct open_how how = {.flags = flags, .mode = mode, .resolve = resolve};
    return (int)syscall(SYS_openat2, directory, path, &how, sizeof(how));
}
int cs_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }
int cs_close_range(unsigned int first, unsigned int last, unsigned int flags) {
    return (int)syscall(SYS_close_range, first, last, flags);
}
int cs_posix_spawn_file_actions_addclosefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}
int cs_posix_spawnattr_setflags_setsid(posix_spawnattr_t *attributes, short flags) {
    return posix_spawnattr_setflags(attributes, (short)(flags | POSIX_SPAWN_SETSID));
}
int cs_signalfd(int fd, const sigset_t *mask, int flags) { return signalfd(fd, mask, flags); }
int cs_sigprocmask_block_all(sigset_t *previous) {
    sigset_t all;
    sigfillset(&all);
    return sigprocmask(SIG_BLOCK, &all, previous);
}
int cs_sigprocmask_unblock_all(void) {
    sigset_t none;
    sigemptyset(&none);
    return sigprocmask(SIG_SETMASK, &none, NULL);
}

const uint64_t cs_RESOLVE_BENEATH = RESOLVE_BENEATH;
const uint64_t cs_RESOLVE_NO_MAGICLINKS = RESOLVE_NO_MAGICLINKS;
const uint64_t cs_RESOLVE_NO_SYMLINKS = RESOLVE_NO_SYMLINKS;
const int cs_O_PATH = O_PATH;
const int cs_O_NOFOLLOW = O_NOFOLLOW;
const int cs_O_DIRECTORY = O_DIRECTORY;
const int cs_O_CLOEXEC = O_CLOEXEC;
const int cs_O_NONBLOCK = O_NONBLOCK;
const int cs_SOCK_NONBLOCK = SOCK_NONBLOCK;
const int cs_SOCK_CLOEXEC = SOCK_CLOEXEC;
const int cs_SFD_NONBLOCK = SFD_NONBLOCK;
const int cs_SFD_CLOEXEC = SFD_CLOEXEC;
const int cs_MFD_CLOEXEC = MFD_CLOEXEC;
const int cs_MSG_CMSG_CLOEXEC = MSG_CMSG_CLOEXEC;
const int cs_SCM_RIGHTS = SCM_RIGHTS;
const int cs_SO_REUSEPORT = SO_REUSEPORT;
const int cs_TCP_DEFER_ACCEPT = TCP_DEFER_ACCEPT;
const int cs_MSG_MORE = MSG_MORE;
const int cs_MSG_PEEK = MSG_PEEK;
const int cs_MSG_NOSIGNAL = MSG_NOSIGNAL;

uint32_t cs_signalfd_siginfo_signo(const void *info) { return ((const struct signalfd_siginfo *)info)->ssi_signo; }
size_t cs_signalfd_siginfo_size(void) { return sizeof(struct signalfd_siginfo); }
int cs_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }

/* TLS session ticket keys shared by every worker (the supervisor makes them and rotates them):
   slot 0 issues and decrypts tickets, slot 1 (the previous key) only decrypts, so a ticket stays good
   across one rotation whichever worker the client lands on. Each key: 16 bytes of name, 32 of HMAC-SHA256
   key, 32 of AES-256 key. */
int64_t cs_atomic_add(int64_t *counter, int64_t delta) { return __atomic_add_fetch(counter, delta, __ATOMIC_RELAXED); }
int64_t cs_atomic_load(const int64_t *counter) { return __atomic_load_n(counter, __ATOMIC_RELAXED); }
void cs_atomic_store(int64_t *counter, int64_t value) { __atomic_store_n(counter, value, __ATOMIC_RELAXED); }

/* The program runs on the SYN with the packet's data after the TCP header; SKF_NET_OFF reaches the
   IP header. The address is mixed by a multiplication (Knuth's 2654435761) whose high half is taken,
   so addresses that differ in their last bits (one subnet's clients) still spread. */
int cs_attach_reuseport_address_hash(int socket, unsigned int groups) {
    if (groups < 2) return 0;
    struct sock_filter code[] = {
        /* 0 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (uint32_t)SKF_NET_OFF + 0),
        /* 1 */ BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4),
        /* 2 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 2, 0),
        /* 3: IPv4 source */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 12),
        /* 4 */ BPF_STMT(BPF_JMP | BPF_JA, 10),
        /* 5: IPv6 source, words 8..23 folded by XOR */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 8),
        /* 6 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
        /* 7 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 12),
        /* 8 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        /* 9 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
        /* 10 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 16),
        /* 11 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        /* 12 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
        /* 13 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 20),
        /* 14 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
        /* 15: both */ BPF_STMT(BPF_ALU | BPF_MUL | BPF_K, 2654435761u),
        /* 16 */ BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16),
        /* 17 */ BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, groups),
        /* 18 */ BPF_STMT(BPF_RET | BPF_A, 0),
    };
    struct sock_fprog program = { .len = sizeof(code) / sizeof(code[0]), .filter = code };
    return setsockopt(socket, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &program, sizeof(program));
}
