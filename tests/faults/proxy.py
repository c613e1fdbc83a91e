"""A fault-injecting TCP proxy for HTTP services on loopback (the S3 server, the MLflow server).

Each new client connection takes the next fault from the plan (none: a clean pass-through):

- ``reset``: read the request's first bytes, then close with a TCP reset;
- ``503``: answer the first request ``503 Slow Down`` without asking the server, then close;
- ``("stall", seconds)``: wait that long before passing anything on (a read timeout on the client);
- ``("cut", n)``: pass on, and reset the connection once ``n`` bytes of object bodies went through;
- ``"corrupt"``: pass on, flipping the first byte of the first object body.

HTTP/1.1 is read just enough to find bodies: request lines and Content-Length on the way in,
status, Content-Length and Transfer-Encoding on the way out. An object body is the answer to a
GET without a query string (a bucket's location or listing has one). It counts connections and
the object body bytes that reached clients.
"""

from __future__ import annotations

import collections
import socket
import struct
import threading
import time


def _reset(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


def _cut(sock: socket.socket) -> None:
    # shutdown first: another thread may be blocked reading this socket, and a close alone would
    # wait for it; the client then sees its stream end in the middle of a body.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    _reset(sock)


class _Reader:
    """Buffered reads from a socket, by line and by count."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def head(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return None
        end = self.buf.index(b"\r\n\r\n") + 4
        head, self.buf = self.buf[:end], self.buf[end:]
        return head

    def some(self, limit: int) -> bytes:
        if not self.buf and not self._fill():
            return b""
        out, self.buf = self.buf[:limit], self.buf[limit:]
        return out


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    first, *lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines:
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
    return first, fields


class FaultProxy:
    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.faults: collections.deque = collections.deque()
        self.applied: list = []
        self.connections = 0
        self.object_bytes = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def plan(self, *faults) -> None:
        with self.lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.applied.clear()
            self.connections = 0
            self.object_bytes = 0

    def close(self) -> None:
        self.closed = True
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                fault = self.faults.popleft() if self.faults else None
                self.connections += 1
                if fault is not None:
                    self.applied.append(fault)
            threading.Thread(target=self._serve, args=(client, fault), daemon=True).start()

    def _serve(self, client: socket.socket, fault) -> None:
        kind, arg = (fault, None) if not isinstance(fault, tuple) else fault
        try:
            if kind == "reset":
                client.settimeout(5)
                try:
                    client.recv(1024)
                finally:
                    _reset(client)
                return
            if kind == "503":
                client.settimeout(5)
                _Reader(client).head()
                body = b"<Error><Code>SlowDown</Code></Error>"
                client.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
                client.close()
                return
            if kind == "stall":
                time.sleep(arg)
            server = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            _reset(client)
            return
        methods: collections.deque = collections.deque()
        threading.Thread(target=self._requests, args=(client, server, methods), daemon=True).start()
        self._responses(server, client, methods, kind, arg)

    def _requests(self, client: socket.socket, server: socket.socket, methods: collections.deque) -> None:
        """Client to server: pass every byte on, noting each request's method."""
        reader = _Reader(client)
        try:
            while True:
                head = reader.head()
                if head is None:
                    break
                first, fields = _headers(head)
                method, target = first.split(" ")[:2]
                methods.append((method, target))
                server.sendall(head)
                left = int(fields.get("content-length", 0))
                while left:
                    chunk = reader.some(min(left, 65536))
                    if not chunk:
                        return
                    server.sendall(chunk)
                    left -= len(chunk)
        except OSError:
            pass
        finally:
            try:
                server.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _responses(self, server: socket.socket, client: socket.socket, methods: collections.deque, kind, arg) -> None:
        """Server to client: pass responses on, counting (and cutting or corrupting) GET bodies."""
        reader = _Reader(server)
        corrupted = False
        sent = 0
        try:
            while True:
                head = reader.head()
                if head is None:
                    break
                client.sendall(head)
                status, fields = _headers(head)
                while not methods:
                    time.sleep(0.001)
                method, target = methods.popleft()
                is_object = method == "GET" and "?" not in target
                if fields.get("transfer-encoding", "").lower() == "chunked":
                    # Not a file body: pass the rest of the connection through as it comes.
                    while chunk := reader.some(65536):
                        client.sendall(chunk)
                    break
                left = 0 if method == "HEAD" or status.split(" ")[1] in ("204", "304") else int(fields.get("content-length", 0))
                while left:
                    chunk = reader.some(min(left, 65536))
                    if not chunk:
                        return
                    left -= len(chunk)
                    if is_object:
                        if kind == "corrupt" and not corrupted:
                            chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                            corrupted = True
                        if kind == "cut" and sent + len(chunk) > arg:
                            chunk = chunk[: arg - sent]
                            client.sendall(chunk)
                            with self.lock:
                                self.object_bytes += len(chunk)
                            _cut(client)
                            _cut(server)
                            return
                        sent += len(chunk)
                        with self.lock:
                            self.object_bytes += len(chunk)
                    client.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (client, server):
                try:
                    sock.close()
                except OSError:
                    pass
