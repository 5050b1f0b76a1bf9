#!/usr/bin/env python3
"""A raw TLS exchange for the tests: connects to 127.0.0.1:PORT (no certificate check: the tests'
certificates are their own), sends REQUEST (escapes such as \\r\\n decoded), reads until the server
closes or TIMEOUT seconds pass, and writes what it received to standard output, bytes as they came.

usage: tls_exchange.py PORT REQUEST [TIMEOUT]
"""
import socket
import ssl
import sys

port = int(sys.argv[1])
request = sys.argv[2].encode().decode("unicode_escape").encode("latin-1")
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
    with context.wrap_socket(raw, server_hostname="localhost") as connection:
        connection.sendall(request)
        received = b""
        try:
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (socket.timeout, ssl.SSLError, ConnectionError):
            pass
sys.stdout.buffer.write(received)
