#!/usr/bin/env python3
"""Raw HTTP/2 frames for the tests: connects to 127.0.0.1:PORT (TLS with ALPN h2, or cleartext with
prior knowledge when --plain), plays SCENARIO (frames a well-behaved client library would never send,
or sends too fast), then reads what the server answers for up to TIMEOUT seconds, and prints one JSON
object: the server's GOAWAY (error code and last stream id), each stream's RST_STREAM code, status and
body length, and whether the server closed the connection.

usage: h2_probe.py PORT SCENARIO [--plain] [--timeout SECONDS] [--path PATH] [--slow] [--proxy HEADER] [--seed N]

--slow opens the flow-control windows 20 ms after each DATA frame: a download that takes a while.
--wide-open opens the windows as wide as they go at the start and sends no WINDOW_UPDATE after (with
--slow, a reader that only reads); --small-buffer gives the socket a 32 KiB receive buffer.
--proxy sends HEADER (escapes such as \\r\\n decoded) first, as a load balancer's PROXY protocol.

Uses the `hyperframe` and `hpack` packages (with the `h2` package from PyPI) to encode and decode
frames; nothing here checks what is sent.
"""
import json
import socket
import ssl
import sys
import time

from hpack import Decoder, Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

args = sys.argv[1:]
port = int(args[0])
scenario = args[1]
plain = "--plain" in args
timeout = float(args[args.index("--timeout") + 1]) if "--timeout" in args else 5.0
path = args[args.index("--path") + 1] if "--path" in args else "/index.html"
slow = "--slow" in args
wide_open = "--wide-open" in args

if "--small-buffer" in args:
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    raw.settimeout(timeout)
    raw.connect(("127.0.0.1", port))
else:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
if "--proxy" in args:
    raw.sendall(args[args.index("--proxy") + 1].encode().decode("unicode_escape").encode("latin-1"))
if plain:
    sock = raw
else:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    sock = context.wrap_socket(raw, server_hostname="localhost")
    assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()

encoder = Encoder()
decoder = Decoder()
result = {"goaway": None, "last_stream": None, "streams": {}, "closed": False, "settings": {}}


# Streams whose end (END_STREAM or RST_STREAM) ends the reading early; the others read until the
# server closes or the time is up.
awaited = []


def request(stream_id, extra=(), end_stream=True, method="GET", target=None, authority="localhost"):
    awaited.append(stream_id)
    fields = [(":method", method), (":scheme", "https"), (":path", target or path)]
    if authority is not None:
        fields.append((":authority", authority))
    fields += list(extra)
    frame = HeadersFrame(stream_id)
    frame.data = encoder.encode(fields)
    frame.flags.add("END_HEADERS")
    if end_stream:
        frame.flags.add("END_STREAM")
    return frame.serialize()


def raw_headers(stream_id, fields, end_stream=True):
    """Fields encoded as given, without the library's checks (uppercase names, bad pseudo-headers)."""
    awaited.append(stream_id)
    block = b"".join(literal(name, value) for name, value in fields)
    frame = HeadersFrame(stream_id)
    frame.data = block
    frame.flags.add("END_HEADERS")
    if end_stream:
        frame.flags.add("END_STREAM")
    return frame.serialize()


def literal(name, value):
    """A literal field line without indexing, new name (RFC 7541 section 6.2.2), 7-bit lengths."""
    name, value = name.encode(), value.encode()
    assert len(name) < 127 and len(value) < 127
    return bytes([0x00, len(name)]) + name + bytes([len(value)]) + value


def settings(**values):
    frame = SettingsFrame(0)
    ids = {"initial_window_size": SettingsFrame.INITIAL_WINDOW_SIZE, "max_concurrent_streams": SettingsFrame.MAX_CONCURRENT_STREAMS}
    for name, value in values.items():
        frame.settings[ids[name]] = value
    return frame.serialize()


def send(data):
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
        result["closed"] = True


buffer = b""


def read_frames(seconds):
    """Reads frames for up to `seconds` (or until the server closes), recording what they say."""
    global buffer
    deadline = time.time() + seconds
    while time.time() < deadline and not result["closed"]:
        if awaited and all(str(stream_id) in result["streams"]
                           and (result["streams"][str(stream_id)]["ended"] or result["streams"][str(stream_id)]["rst"] is not None)
                           for stream_id in awaited):
            break
        sock.settimeout(max(0.01, deadline - time.time()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, ssl.SSLError, OSError):
            result["closed"] = True
            break
        if not chunk:
            result["closed"] = True
            break
        buffer += chunk
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9:9 + length]))
            buffer = buffer[9 + length:]
            record(frame)


def record(frame):
    stream = result["streams"].setdefault(str(frame.stream_id), {"status": None, "body": 0, "rst": None, "ended": False}) \
        if frame.stream_id else None
    if isinstance(frame, GoAwayFrame):
        result["goaway"] = frame.error_code
        result["last_stream"] = frame.last_stream_id
        result["debug"] = frame.additional_data.decode("latin-1")
    elif isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
        result["settings"] = {str(key): value for key, value in frame.settings.items()}
        send(SettingsFrame(0, flags=["ACK"]).serialize())
    elif isinstance(frame, HeadersFrame):
        for name, value in decoder.decode(frame.data):
            name = name.decode() if isinstance(name, bytes) else name
            value = value.decode() if isinstance(value, bytes) else value
            if name == ":status":
                stream["status"] = int(value)
            stream.setdefault("fields", {})[name] = value
        if "END_STREAM" in frame.flags:
            stream["ended"] = True
    elif isinstance(frame, DataFrame):
        stream["body"] += len(frame.data)
        if "END_STREAM" in frame.flags:
            stream["ended"] = True
        if frame.flow_controlled_length and scenario not in ("never_reads",):
            if slow:
                time.sleep(0.02)
            if not wide_open:
                send(WindowUpdateFrame(0, frame.flow_controlled_length).serialize()
                     + WindowUpdateFrame(frame.stream_id, frame.flow_controlled_length).serialize())
    elif isinstance(frame, RstStreamFrame):
        stream["rst"] = frame.error_code


if wide_open:
    send(PREFACE + settings(initial_window_size=2**31 - 1) + WindowUpdateFrame(0, 2**31 - 1 - 65535).serialize())
else:
    send(PREFACE + settings(initial_window_size=65535))

if scenario == "get":
    send(request(1))
elif scenario == "uppercase":
    send(raw_headers(1, [(":method", "GET"), (":scheme", "https"), (":path", path), (":authority", "localhost"), ("User-Agent", "x")]))
    send(request(3))
elif scenario == "connection_field":
    send(request(1, [("connection", "keep-alive")]))
    send(request(3))
elif scenario == "missing_path":
    send(raw_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "localhost")]))
    send(request(3))
elif scenario == "repeated_method":
    send(raw_headers(1, [(":method", "GET"), (":method", "GET"), (":scheme", "https"), (":path", path), (":authority", "localhost")]))
    send(request(3))
elif scenario == "pseudo_after_regular":
    send(raw_headers(1, [(":method", "GET"), (":scheme", "https"), ("accept", "*/*"), (":path", path), (":authority", "localhost")]))
    send(request(3))
elif scenario == "te_gzip":
    send(request(1, [("te", "gzip")]))
    send(request(3))
elif scenario == "host_mismatch":
    send(request(1, [("host", "other.example")]))
    send(request(3))
elif scenario == "host_only":
    send(request(1, [("host", "localhost")], authority=None))
elif scenario == "no_host":
    send(request(1, authority=None))
elif scenario == "large_header_list":
    send(request(1, [("x-filler-%d" % index, "v" * 100) for index in range(150)]))
    send(request(3))
elif scenario == "many_cookies":
    send(request(1, [("cookie", "c%d=%s" % (index, "v" * 10)) for index in range(400)]))
    send(request(3))
elif scenario == "continuation_flood":
    frame = HeadersFrame(1)
    frame.data = encoder.encode([(":method", "GET"), (":scheme", "https"), (":path", path), (":authority", "localhost")])
    frame.flags.add("END_STREAM")
    data = frame.serialize()
    for _ in range(100):
        continuation = ContinuationFrame(1)
        continuation.data = encoder.encode([("x-a", "b")])
        data += continuation.serialize()
    send(data)
elif scenario == "split_headers":
    # One header block in two reads: HEADERS, a pause, then CONTINUATION with the rest (a Range field).
    awaited.append(1)
    block = encoder.encode([(":method", "GET"), (":scheme", "https"), (":path", path), (":authority", "localhost"),
                            ("user-agent", "split"), ("range", "bytes=0-3")])
    first = HeadersFrame(1)
    first.data = block[:len(block) // 2]
    first.flags.add("END_STREAM")
    send(first.serialize())
    time.sleep(0.3)
    rest = ContinuationFrame(1)
    rest.data = block[len(block) // 2:]
    rest.flags.add("END_HEADERS")
    send(rest.serialize())
elif scenario == "content_length_mismatch":
    # RFC 9113 section 8.1.1: content-length that disagrees with the DATA is malformed.
    send(request(1, [("content-length", "1")], end_stream=False, method="POST") + DataFrame(1, data=b"ab", flags=["END_STREAM"]).serialize())
elif scenario == "data_after_end_stream":
    # DATA on a stream the client already ended (half-closed remote): STREAM_CLOSED (RFC 9113 section 5.1).
    send(request(1))
    time.sleep(0.3)
    send(DataFrame(1, data=b"x").serialize())
    awaited.clear()
elif scenario == "headers_after_end_stream":
    send(request(1))
    time.sleep(0.3)
    send(raw_headers(1, [(":method", "GET"), (":scheme", "https"), (":path", path), (":authority", "localhost")]))
    awaited.clear()
elif scenario == "partial_headers":
    # A header block begun and never finished (no END_HEADERS, no CONTINUATION): the header deadline.
    frame = HeadersFrame(1)
    frame.data = encoder.encode([(":method", "GET"), (":scheme", "https"), (":path", path)])
    frame.flags.add("END_STREAM")
    send(frame.serialize())
elif scenario == "random_frames":
    # Frames of every type with random flags, stream ids and payloads, some of them valid requests, and
    # HPACK blocks cut at random: the server must answer or refuse, never crash (run under ASan).
    import random
    rng = random.Random(int(args[args.index("--seed") + 1]) if "--seed" in args else 1)
    data = b""
    for index in range(300):
        kind = rng.choice([0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x20])
        stream_id = rng.choice([0, 1, 3, 5, 7, rng.randrange(1, 2**31, 2), rng.randrange(0, 2**31)])
        if kind == 1:
            block = encoder.encode([(":method", rng.choice(["GET", "HEAD", "POST", "get", ""])), (":scheme", "https"),
                                    (":path", rng.choice(["/", path, "//x", "*", "/a?b#c", "/%00", "/" + "a" * 3000])),
                                    (":authority", rng.choice(["localhost", "", "a b", "x" * 300]))]
                                   + [(rng.choice(["range", "if-none-match", "accept-encoding", "cookie", "x"]),
                                       rng.choice(["bytes=0-1", "*", "gzip", "a=b", "\t"])) for _ in range(rng.randrange(4))])
            payload = block[:rng.randrange(len(block) + 1)] if rng.random() < 0.3 else block
        else:
            payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 4, 5, 8, 9, 13, 40])))
        flags = rng.randrange(256) if rng.random() < 0.3 else rng.choice([0, 1, 4, 5])
        data += len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload
    send(data)
elif scenario == "rapid_reset":
    data = b""
    for index in range(2000):
        stream_id = 1 + 2 * index
        data += request(stream_id) + RstStreamFrame(stream_id, error_code=8).serialize()
    send(data)
elif scenario == "settings_flood":
    # Sent without reading a byte: the acknowledgements pile up in the server.
    data = SettingsFrame(0).serialize() * 5000
    for _ in range(10):
        send(data)
elif scenario == "ping_flood":
    data = b"".join(PingFrame(0, opaque_data=index.to_bytes(8, "big")).serialize() for index in range(5000))
    for _ in range(10):
        send(data)
elif scenario == "empty_data_flood":
    send(request(1, end_stream=False, method="POST") + DataFrame(1).serialize() * 500)
elif scenario == "window_overflow":
    send(WindowUpdateFrame(0, 2**31 - 1).serialize() * 2)
elif scenario == "stream_window_overflow":
    send(request(1, end_stream=False, method="POST") + WindowUpdateFrame(1, 2**31 - 1).serialize() * 2)
    send(request(3))
elif scenario == "too_many_streams":
    # The client opens no window, so no response can finish and every stream stays open.
    send(settings(initial_window_size=0))
    send(b"".join(request(1 + 2 * index) for index in range(101)))
elif scenario == "never_reads":
    send(settings(initial_window_size=0))
    send(request(1))
elif scenario == "body_ignored":
    # A request declaring a body past limits.body (1m): answered, then RST_STREAM(NO_ERROR).
    send(request(1, [("content-length", "2000000")], end_stream=False, method="POST"))
elif scenario == "data_after_reset":
    # The server refuses a body (413, then RST_STREAM(NO_ERROR)) before the client ended the stream:
    # DATA the client had in flight is ignored (RFC 9113 section 5.1, closed), and stream 3 is answered.
    send(request(1, [("content-length", "2000000")], end_stream=False, method="POST"))
    time.sleep(0.3)
    send(DataFrame(1, data=b"x" * 100).serialize() + request(3))
elif scenario == "data_after_client_reset":
    # The client ends stream 1, gets its answer, resets it, then sends DATA on it: STREAM_CLOSED.
    send(request(1))
    time.sleep(0.3)
    send(RstStreamFrame(1, error_code=8).serialize())
    send(DataFrame(1, data=b"x").serialize())
    awaited.clear()
elif scenario == "data_after_client_reset_open":
    # The client opens stream 1 without ending it, resets it, then sends DATA on it, all in one write:
    # STREAM_CLOSED (RFC 9113 section 5.1: any frame but PRIORITY after receiving RST_STREAM).
    send(request(1, end_stream=False) + RstStreamFrame(1, error_code=8).serialize()
         + DataFrame(1, data=b"test", flags=["END_STREAM"]).serialize())
    awaited.clear()
elif scenario == "headers_after_client_reset_open":
    # The same with HEADERS on the reset stream.
    send(request(1, end_stream=False) + RstStreamFrame(1, error_code=8).serialize() + request(1))
    awaited.clear()
elif scenario == "bodies_in_one_read":
    # Two uploads whose streams (1 and 129) share the bit the server marks a closing stream with, their
    # headers and bodies in one write: the first body's END_STREAM must not make the second one's DATA
    # look like DATA on a closed stream. Both are answered (405), nothing reset.
    fields = [("content-length", "5")]
    send(request(1, fields, end_stream=False, method="POST") + request(129, fields, end_stream=False, method="POST")
         + DataFrame(1, data=b"hello", flags=["END_STREAM"]).serialize()
         + DataFrame(129, data=b"hello", flags=["END_STREAM"]).serialize())
elif scenario == "data_after_many_streams":
    # Sixty streams ended and answered, then DATA on the first, the oldest the server remembers: STREAM_CLOSED.
    send(b"".join(request(1 + 2 * index) for index in range(60)))
    time.sleep(0.5)
    send(DataFrame(1, data=b"x").serialize())
    awaited.clear()
elif scenario == "lower_stream_id":
    send(request(5))
    time.sleep(0.2)
    send(request(3))
    awaited.clear()
elif scenario == "body_discarded":
    # A body within limits.body, sent after the answer: read to its end, no reset.
    send(request(1, [("content-length", "5")], end_stream=False, method="POST"))
    time.sleep(0.3)
    send(DataFrame(1, data=b"hello", flags=["END_STREAM"]).serialize())
    awaited.clear()
elif scenario == "idle":
    pass
elif scenario == "garbage":
    send(b"\x00\x00\x04\xff\x00\x00\x00\x00\x00" + b"abcd")  # an unknown frame type: ignored (RFC 9113 5.5)
    send(request(1))
elif scenario == "data_on_idle_stream":
    send(DataFrame(5, data=b"x").serialize())
else:
    sys.exit("unknown scenario " + scenario)

if scenario in ("rapid_reset", "too_many_streams", "never_reads", "empty_data_flood", "continuation_flood"):
    awaited = []
read_frames(timeout)
print(json.dumps(result))
