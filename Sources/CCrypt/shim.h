// libcrypt (libxcrypt on Debian, in glibc's place): crypt_r for the htpasswd hashes of basic
// authentication (bcrypt $2b$/$2y$, SHA-512-crypt $6$, yescrypt $y$).
#include <crypt.h>
