"""A client that sends a huge chunked body over a real socket and stops once it is answered.

For the tests of ``app.guard``: an answer that comes while the client is still sending shows
that the server did not wait for (or read) the rest of the body.
"""

from __future__ import annotations

import select
import socket
import time

MIB = 1024 * 1024
TOTAL = 1024 * MIB  # what a client would send if nobody stopped it (1 GiB)
BOUNDARY = "guard-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart_head(filename: str = "big.jsonl") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def send_chunked_until_answered(
    address: tuple[str, int], path: str, head: bytes, headers: dict[str, str] | None = None
) -> tuple[bytes, int]:
    """Send a chunked body of up to TOTAL bytes; stop as soon as the server answers.

    Returns the first bytes of the answer and how many body bytes the socket accepted.
    """
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    request = (
        f"POST {path} HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n{extra}"
        f"Content-Type: {MULTIPART if path == '/datasets' else 'application/json'}\r\n\r\n"
    ).encode()
    piece = b"x" * MIB
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    pending = request + f"{len(head):x}\r\n".encode() + head + b"\r\n"
    sent, last_queued = 0, False
    with socket.create_connection(address, timeout=30) as conn:
        conn.setblocking(False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([conn], [conn], [], 1.0)
            if readable:
                return _read_answer(conn), sent
            if writable and (pending or not last_queued):
                if not pending:
                    last_queued = sent + len(chunk) >= TOTAL
                    pending = b"0\r\n\r\n" if last_queued else chunk
                try:
                    n = conn.send(pending)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    continue
                sent += n
                pending = pending[n:]
    raise AssertionError(f"no answer after sending {sent} bytes")


def _read_answer(conn: socket.socket) -> bytes:
    """Status line, headers and the whole body (by its Content-Length) of one answer."""
    conn.setblocking(True)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += conn.recv(65536) or b""
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        more = conn.recv(65536)
        assert more, "connection closed mid-answer"
        body += more
    return head + b"\r\n\r\n" + body
