"""A small keep-alive HTTP/1.1 load generator for the benchmarks (asyncio, raw sockets).

Light on CPU so that, on a 2-core machine, the server under test gets most of it. Each connection
may bind its own loopback source address, so the portal sees many guests. Only loopback.
"""

import asyncio
import time


async def _read_response(reader):
    """(status, headers dict, body bytes) of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


class Connection:
    """One keep-alive connection from a chosen source address."""

    def __init__(self, host, port, source=None):
        self.host, self.port, self.source = host, port, source
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, local_addr=(self.source, 0) if self.source else None)

    async def request(self, method, path, headers=None, body=b""):
        """Send one request and read its response; reconnects once if the server closed."""
        for attempt in (1, 2):
            if self.writer is None:
                await self.open()
            head = [f"{method} {path} HTTP/1.1", f"Host: {headers.pop('Host') if headers and 'Host' in headers else self.host}"]
            for name, value in (headers or {}).items():
                head.append(f"{name}: {value}")
            if body:
                head.append(f"Content-Length: {len(body)}")
            data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
            try:
                self.writer.write(data)
                await self.writer.drain()
                status, response_headers, content = await _read_response(self.reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2:
                    raise
                continue
            if response_headers.get("connection", "").lower() == "close":
                self.close()
            return status, response_headers, content

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def hammer(host, port, path, connections, seconds, headers=None, sources=None):
    """GET path on `connections` keep-alive connections for `seconds`; returns (count, errors,
    latencies in seconds)."""
    deadline = time.perf_counter() + seconds
    latencies, errors = [], [0]

    async def worker(i):
        source = sources[i % len(sources)] if sources else None
        conn = Connection(host, port, source)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await conn.request("GET", path, dict(headers or {}))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors[0] += 1
                conn.close()
                await asyncio.sleep(0.01)
                continue
            latencies.append(time.perf_counter() - started)
        conn.close()

    await asyncio.gather(*(worker(i) for i in range(connections)))
    return len(latencies), errors[0], latencies


def requests_per_second(host, port, path, connections=20, seconds=5.0, headers=None, sources=None):
    """(answers per second, errors) of GET path."""
    count, errors, _ = asyncio.run(hammer(host, port, path, connections, seconds, headers, sources))
    return count / seconds, errors
