#ifndef CNGHTTP2_SHIM_H
#define CNGHTTP2_SHIM_H

/* libnghttp2 (Debian 12: 1.52.0 with the rapid-reset and CONTINUATION-flood fixes backported). The
   library does no I/O: the worker feeds it decrypted bytes (nghttp2_session_mem_recv) and takes its
   output (nghttp2_session_mem_send) inside its own event loop. Nothing here but the header: the API
   the worker uses is functions and enums Swift can call as they are. */
#include <nghttp2/nghttp2.h>

#endif
