#ifndef CCURL_SHIM_H
#define CCURL_SHIM_H

/* libcurl for the ACME process only. Linking it would load libcurl and the thirty libraries it needs
   (GnuTLS, Kerberos, LDAP, SSH, RTMP ...) into every process of the server at every exec, workers
   included; so only its header is used at build time, and the ACME process opens the library itself
   (dlopen of libcurl.so.4, from libcurl4) and calls it through this table. curl_easy_setopt and
   curl_easy_getinfo are variadic, which Swift cannot call, so each argument type used has a wrapper.
   The table is filled by ccurl_load and held by the caller: nothing here has state of its own. */

#include <curl/curl.h>
#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

typedef struct {
    CURLcode (*global_init)(long flags);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *handle, CURLoption option, ...);
    CURLcode (*easy_perform)(CURL *handle);
    CURLcode (*easy_getinfo)(CURL *handle, CURLINFO info, ...);
    void (*easy_reset)(CURL *handle);
    void (*easy_cleanup)(CURL *handle);
    const char *(*easy_strerror)(CURLcode code);
    struct curl_slist *(*slist_append)(struct curl_slist *list, const char *string);
    void (*slist_free_all)(struct curl_slist *list);
    curl_version_info_data *(*version_info)(CURLversion version);
} ccurl_api;

/* Opens libcurl and fills `api`; 0 on success, else -1 with dlerror's text in `error`. */
static inline int ccurl_load(ccurl_api *api, char *error, size_t capacity) {
    void *library = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        const char *reason = dlerror();
        strncpy(error, reason ? reason : "dlopen failed", capacity - 1);
        error[capacity - 1] = 0;
        return -1;
    }
#define CCURL_SYMBOL(field, name) \
    *(void **)(&api->field) = dlsym(library, name); \
    if (api->field == NULL) { strncpy(error, "libcurl.so.4 lacks " name, capacity - 1); error[capacity - 1] = 0; return -1; }
    CCURL_SYMBOL(global_init, "curl_global_init")
    CCURL_SYMBOL(easy_init, "curl_easy_init")
    CCURL_SYMBOL(easy_setopt, "curl_easy_setopt")
    CCURL_SYMBOL(easy_perform, "curl_easy_perform")
    CCURL_SYMBOL(easy_getinfo, "curl_easy_getinfo")
    CCURL_SYMBOL(easy_reset, "curl_easy_reset")
    CCURL_SYMBOL(easy_cleanup, "curl_easy_cleanup")
    CCURL_SYMBOL(easy_strerror, "curl_easy_strerror")
    CCURL_SYMBOL(slist_append, "curl_slist_append")
    CCURL_SYMBOL(slist_free_all, "curl_slist_free_all")
    CCURL_SYMBOL(version_info, "curl_version_info")
#undef CCURL_SYMBOL
    return api->global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

/* Whether libcurl.so.4 can be opened (for `webserver check`); closed again. */
static inline int ccurl_available(void) {
    void *library = dlopen("libcurl.so.4", RTLD_LAZY | RTLD_LOCAL);
    if (library == NULL) return 0;
    dlclose(library);
    return 1;
}

static inline CURLcode ccurl_setopt_long(const ccurl_api *api, CURL *handle, CURLoption option, long value) {
    return api->easy_setopt(handle, option, value);
}
static inline CURLcode ccurl_setopt_string(const ccurl_api *api, CURL *handle, CURLoption option, const char *value) {
    return api->easy_setopt(handle, option, value);
}
static inline CURLcode ccurl_setopt_pointer(const ccurl_api *api, CURL *handle, CURLoption option, void *value) {
    return api->easy_setopt(handle, option, value);
}
static inline CURLcode ccurl_setopt_list(const ccurl_api *api, CURL *handle, CURLoption option, struct curl_slist *value) {
    return api->easy_setopt(handle, option, value);
}
typedef size_t (*ccurl_data_callback)(char *data, size_t size, size_t count, void *context);
static inline CURLcode ccurl_setopt_data_callback(const ccurl_api *api, CURL *handle, CURLoption option, ccurl_data_callback value) {
    return api->easy_setopt(handle, option, value);
}
typedef int (*ccurl_progress_callback)(void *context, curl_off_t download_total, curl_off_t downloaded,
                                       curl_off_t upload_total, curl_off_t uploaded);
static inline CURLcode ccurl_setopt_progress_callback(const ccurl_api *api, CURL *handle, ccurl_progress_callback value) {
    return api->easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, value);
}
static inline long ccurl_response_code(const ccurl_api *api, CURL *handle) {
    long code = 0;
    api->easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &code);
    return code;
}
static inline const char *ccurl_version(const ccurl_api *api) {
    curl_version_info_data *info = api->version_info(CURLVERSION_NOW);
    return info ? info->version : "?";
}

#endif
