#!/usr/bin/env python3
"""HTTP/2 connections held open and used in rounds, for the memory tests: opens CONNECTIONS TLS
connections to 127.0.0.1:PORT with ALPN h2 (the `h2` package from PyPI as the client), then reads
commands from stdin, one per line, until it ends:

  get PATH N   N GETs of PATH on every connection; every answer read and checked (200, and the body is
               SITE/PATH); prints "ok"
  hold PATH    one GET of PATH on every connection, read until the first WINDOW bytes of each body (the
               client opens only --window bytes per stream, so a larger body stops there: every
               connection has a response waiting); prints "held", waits for a line, then opens the
               windows, reads and checks every answer, and prints "ok"

usage: h2_rounds.py PORT CONNECTIONS SITE [--window BYTES]

Any failure (a connection closed early, a wrong status or body) exits non-zero with the reason on
stderr.
"""
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events
import h2.settings

args = sys.argv[1:]
port, count, site = int(args[0]), int(args[1]), args[2]
window = int(args[args.index("--window") + 1]) if "--window" in args else None

context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
context.set_alpn_protocols(["h2"])
held = []
for _ in range(count):
    s = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    if window is not None:
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    s.sendall(c.data_to_send())
    held.append((s, c))


class Answer:
    def __init__(self, stream_id, acknowledging):
        self.stream_id, self.status, self.body, self.done = stream_id, None, b"", False
        self.acknowledging, self.unacknowledged = acknowledging, 0


def read(s, c, answers, until):
    """Reads the connection's frames until `until()`; acknowledges DATA of the answers that may flow."""
    while not until():
        data = s.recv(65536)
        if not data:
            sys.exit("the server closed a connection before its answers ended")
        for event in c.receive_data(data):
            answer = answers.get(getattr(event, "stream_id", None))
            if answer is None:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                answer.status = dict(event.headers)[b":status"]
            elif isinstance(event, h2.events.DataReceived):
                answer.body += event.data
                answer.unacknowledged += event.flow_controlled_length
                if answer.acknowledging:
                    c.acknowledge_received_data(answer.unacknowledged, answer.stream_id)
                    answer.unacknowledged = 0
            elif isinstance(event, h2.events.StreamEnded):
                answer.done = True
        s.sendall(c.data_to_send())


def request(path, n, acknowledging):
    """`n` GETs of `path` on every connection: per connection, its answers by stream id."""
    every = []
    for s, c in held:
        answers = {}
        for _ in range(n):
            sid = c.get_next_available_stream_id()
            c.send_headers(sid, [(":method", "GET"), (":scheme", "https"), (":path", path), (":authority", "localhost")],
                           end_stream=True)
            answers[sid] = Answer(sid, acknowledging)
        s.sendall(c.data_to_send())
        every.append(answers)
    return every


def finish(path, every):
    expected = open(site + path, "rb").read()
    for (s, c), answers in zip(held, every):
        read(s, c, answers, lambda: all(a.done for a in answers.values()))
        for a in answers.values():
            if a.status != b"200" or a.body != expected:
                sys.exit(f"{path} on stream {a.stream_id}: status {a.status}, {len(a.body)} bytes, expected {len(expected)}")
    print("ok", flush=True)


for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "get":
        finish(words[1], request(words[1], int(words[2]), True))
    elif words[0] == "hold":
        every = request(words[1], 1, False)
        for (s, c), answers in zip(held, every):
            read(s, c, answers, lambda: all(len(a.body) >= (window or 0) or a.done for a in answers.values()))
        print("held", flush=True)
        sys.stdin.readline()
        for (s, c), answers in zip(held, every):
            for a in answers.values():
                a.acknowledging = True
                c.acknowledge_received_data(a.unacknowledged, a.stream_id)
                a.unacknowledged = 0
                c.increment_flow_control_window(1 << 20, stream_id=a.stream_id)
            s.sendall(c.data_to_send())
        finish(words[1], every)
    else:
        sys.exit(f"unknown command {line!r}")
