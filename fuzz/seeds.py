#!/usr/bin/env python3
"""Writes a few valid client streams, in the input format of
fuzz_targets/frames.rs, into the directory given (the corpus to start from):
the fuzzer finds its way to the frame reader's paths faster from there.

    python3 fuzz/seeds.py fuzz/corpus/frames
"""

import os
import struct
import sys

MASK = bytes([0x37, 0xFA, 0x21, 0x3D])
FIN = 0x80
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(first, payload):
    """A client frame: masked, its length minimally encoded."""
    length = len(payload)
    if length <= 125:
        header = bytes([first, 0x80 | length])
    elif length <= 0xFFFF:
        header = bytes([first, 0x80 | 126]) + struct.pack(">H", length)
    else:
        header = bytes([first, 0x80 | 127]) + struct.pack(">Q", length)
    masked = bytes(byte ^ MASK[i % 4] for i, byte in enumerate(payload))
    return header + MASK + masked


def close(code, reason):
    return frame(FIN | CLOSE, struct.pack(">H", code) + reason)


def case(limit, min_left, buffer, ends, stream):
    """An input: the settings byte (indexes into LIMITS, MIN_LEFT and
    BUFFERS), the cut points, then the stream."""
    settings = limit | min_left << 2 | buffer << 4
    cuts = b"".join(struct.pack(">H", end) for end in ends)
    return bytes([settings, len(ends)]) + cuts + stream


def seeds():
    euro = "a€𝄞é".encode()
    mixed = b"".join(
        [
            frame(FIN | TEXT, b"hello"),
            frame(BINARY, bytes([0, 1, 2])),
            frame(FIN | PING, b"ping"),
            frame(CONTINUATION, bytes([3])),
            frame(FIN | PONG, b""),
            frame(FIN | CONTINUATION, b""),
            frame(TEXT, euro[:3]),
            frame(CONTINUATION, euro[3:6]),
            frame(FIN | CONTINUATION, euro[6:]),
            close(1000, b"bye"),
        ]
    )
    yield "mixed", case(1, 0, 1, [3, 20, 41], mixed)
    # Large enough for reads straight into the message, and its growth.
    large = bytes(i * 7 % 251 for i in range(12_000))
    two_fragments = frame(BINARY, large[:7000]) + frame(FIN | CONTINUATION, large[7000:])
    yield "large", case(3, 2, 2, [100, 5000], two_fragments)
    controls = frame(FIN | PING, bytes(range(125))) + frame(FIN | CLOSE, b"")
    yield "controls", case(2, 0, 0, [60], controls)
    text = frame(FIN | TEXT, "é".encode() * 60) + close(4999, "fine".encode())
    yield "text", case(0, 1, 3, [], text)


def main():
    directory = sys.argv[1]
    os.makedirs(directory, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(directory, f"seed-{name}"), "wb") as file:
            file.write(data)


if __name__ == "__main__":
    main()
