#ifndef CNGHTTP2_SHIM_H
#define CNGHTTP2_SHIM_H

/* libnghttp2 (Debian 12: 1.52.0 with the rapid-reset and CONTINUATION-flood fixes backported). The
   library does no I/O: the worker feeds it decrypted bytes (nghttp2_session_mem_recv) and takes its
   output (nghttp2_session_mem_send) inside its own event loop. Besides the header, one thing: the
   sessions' allocator, in C because the library calls it for every allocation. */
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <unistd.h>

/* A session's outbound frame buffer (see FrameBuffer in Sources/Server/HTTP2/HTTP2Session.swift):
   the one allocation of at least 16 KiB the library makes while the session is created gets pages of
   its own, so that an idle connection can give them back (madvise). Everything else is glibc's. */
typedef struct {
    int creating;
    int resident;
    void *start;
    size_t size;
} cnghttp2_frame_buffer;

__attribute__((noinline, cold)) static void *cnghttp2_malloc_large(size_t size, cnghttp2_frame_buffer *record) {
    if (record->creating && record->start == NULL) {
        void *pointer = NULL;
        if (posix_memalign(&pointer, (size_t)sysconf(_SC_PAGESIZE), size) != 0) return NULL;
        record->start = pointer;
        record->size = size;
        return pointer;
    }
    return malloc(size);
}

static inline void *cnghttp2_malloc(size_t size, void *user) {
    if (__builtin_expect(size >= 16384, 0)) return cnghttp2_malloc_large(size, (cnghttp2_frame_buffer *)user);
    return malloc(size);
}

static inline void cnghttp2_free(void *pointer, void *user) {
    cnghttp2_frame_buffer *record = (cnghttp2_frame_buffer *)user;
    if (__builtin_expect(pointer == record->start, 0)) record->start = NULL;
    free(pointer);
}

static inline void *cnghttp2_calloc(size_t count, size_t size, void *user) {
    (void)user;
    return calloc(count, size);
}

/* The library allocates its buffers with realloc(NULL, size) (nghttp2_buf_reserve). */
static inline void *cnghttp2_realloc(void *pointer, size_t size, void *user) {
    cnghttp2_frame_buffer *record = (cnghttp2_frame_buffer *)user;
    if (pointer == NULL) return cnghttp2_malloc(size, user);
    if (pointer == record->start) record->start = NULL;
    return realloc(pointer, size);
}

/* The allocator for a session whose record is `record`. */
static inline nghttp2_mem cnghttp2_session_memory(cnghttp2_frame_buffer *record) {
    nghttp2_mem memory = {record, cnghttp2_malloc, cnghttp2_free, cnghttp2_calloc, cnghttp2_realloc};
    return memory;
}

#endif
