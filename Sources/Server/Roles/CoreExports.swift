// What the listener and the manager share with the rest of the server lives in ServerCore (no Foundation,
// no OpenSSL); the full server and its command line see it through this module.
@_exported public import ServerCore
