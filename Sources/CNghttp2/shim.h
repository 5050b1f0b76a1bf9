#ifndef CNGHTTP2_SHIM_H
#define CNGHTTP2_SHIM_H

/* libnghttp2 (Debian 12: 1.52.0 with the rapid-reset and CONTINUATION-flood fixes backported). The
   library does no I/O: the worker feeds it decrypted bytes (nghttp2_session_mem_recv) and takes its
   output (nghttp2_session_mem_send) inside its own event loop. Besides the header, one thing: the
   sessions' allocator, in C because the library calls it for every allocation. */
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The pages of a session that an idle connection can give back (see SessionPages in
   Sources/Server/HTTP2/HTTP2Session.swift). While the session is created, two of the library's
   allocations get pages of their own: the first of at least 16 KiB (its outbound frame buffer) and the
   first zeroed one of whole pages (its stream table, empty when it is all zeros). Everything else is
   glibc's malloc. A record forgets an allocation the library frees or moves. */
typedef struct {
    int creating;
    int resident;
    void *start; /* the frame buffer */
    size_t size;
    void *table; /* the stream table */
    size_t tableSize;
} cnghttp2_pages;

__attribute__((noinline, cold)) static void *cnghttp2_malloc_large(size_t size, cnghttp2_pages *record) {
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
    if (__builtin_expect(size >= 16384, 0)) return cnghttp2_malloc_large(size, (cnghttp2_pages *)user);
    return malloc(size);
}

static inline void cnghttp2_forget(void *pointer, cnghttp2_pages *record) {
    if (__builtin_expect(pointer == record->start, 0)) record->start = NULL;
    if (__builtin_expect(pointer == record->table, 0)) record->table = NULL;
}

static inline void cnghttp2_free(void *pointer, void *user) {
    cnghttp2_forget(pointer, (cnghttp2_pages *)user);
    free(pointer);
}

__attribute__((noinline, cold)) static void *cnghttp2_calloc_large(size_t count, size_t size, cnghttp2_pages *record) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t total = count * size; /* cannot overflow: checked by the caller */
    if (record->creating && record->table == NULL && total % page == 0) {
        void *pointer = NULL;
        if (posix_memalign(&pointer, page, total) != 0) return NULL;
        memset(pointer, 0, total);
        record->table = pointer;
        record->tableSize = total;
        return pointer;
    }
    return calloc(count, size);
}

static inline void *cnghttp2_calloc(size_t count, size_t size, void *user) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) return NULL;
    if (__builtin_expect(total >= 4096, 0)) return cnghttp2_calloc_large(count, size, (cnghttp2_pages *)user);
    return calloc(count, size);
}

/* The library allocates its buffers with realloc(NULL, size) (nghttp2_buf_reserve). */
static inline void *cnghttp2_realloc(void *pointer, size_t size, void *user) {
    if (pointer == NULL) return cnghttp2_malloc(size, user);
    cnghttp2_forget(pointer, (cnghttp2_pages *)user);
    return realloc(pointer, size);
}

/* The allocator for a session whose record is `record`. */
static inline nghttp2_mem cnghttp2_session_memory(cnghttp2_pages *record) {
    nghttp2_mem memory = {record, cnghttp2_malloc, cnghttp2_free, cnghttp2_calloc, cnghttp2_realloc};
    return memory;
}

#endif
