#!/usr/bin/env python3
"""Bounded HTTP load for the recovery tests, run as a second process.

usage: load.py PORT CLIENTS SECONDS MODE PATH EXPECTED_LENGTH [SOURCE_ADDRESS]
MODE is "new" (a new TCP connection per request) or "keepalive" (one connection per client, reopened
after a failure). Each client stops after SECONDS or 100000 requests. Only 127.0.0.1 is ever a target;
SOURCE_ADDRESS (another loopback address such as 127.0.0.2) is the address connections come from;
the environment's LOAD_HOST is the Host header sent (127.0.0.1 by default); with LOAD_TLS_CA (a PEM
file) every connection is TLS, verified against that CA for the name LOAD_HOST (sent as SNI).
Prints one JSON object: ok, failed, per-client failure counts, and the local ports used.
"""
import json
import os
import socket
import ssl
import sys
import threading
import time

port, clients, seconds, mode, path, expected = (
    int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]))
source = (sys.argv[7], 0) if len(sys.argv) > 7 else None
ports = set()
host = os.environ.get("LOAD_HOST", "127.0.0.1")
tls = None
if os.environ.get("LOAD_TLS_CA"):
    tls = ssl.create_default_context(cafile=os.environ["LOAD_TLS_CA"])
request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode()
request += (b"Connection: close\r\n" if mode == "new" else b"") + b"\r\n"
deadline = time.monotonic() + seconds
results = [{"ok": 0, "failed": 0, "errors": []} for _ in range(clients)]


def read_response(sock, buffer):
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response head")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() == b"connection" and value.strip().lower() == b"close":
            close = True
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        rest += chunk
    if status != 200 or length != expected:
        raise ValueError(f"status {status} length {length}")
    return rest[length:], close


def client(index):
    result = results[index]
    sock = None
    buffer = b""
    count = 0
    while time.monotonic() < deadline and count < 100000:
        count += 1
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=source)
                ports.add(sock.getsockname()[1])
                if tls is not None:
                    sock = tls.wrap_socket(sock, server_hostname=host)
                buffer = b""
            sock.sendall(request)
            buffer, close = read_response(sock, buffer)
            result["ok"] += 1
            if mode == "new" or close:
                sock.close()
                sock = None
        except Exception as error:  # noqa: BLE001 - every failure counts
            result["failed"] += 1
            if len(result["errors"]) < 5:
                result["errors"].append(repr(error))
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()


threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({
    "ok": sum(r["ok"] for r in results),
    "failed": sum(r["failed"] for r in results),
    "perClient": [r["failed"] for r in results],
    "errors": [e for r in results for e in r["errors"]][:10],
    "ports": sorted(ports),
}))
