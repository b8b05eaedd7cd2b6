"""A TCP proxy on loopback that adds a round-trip delay: a far-away bucket, without netem.

This kernel has no netem qdisc (``tc ... netem`` fails), so the benchmarks put this proxy between
every tool and the local S3 server. Each chunk read from one side is written to the other side
half a round trip later, in order, in both directions. Bandwidth is not limited: bytes keep
flowing while earlier ones wait, as on a long fat pipe.

A new connection is free by default. moto_server answers every request with ``Connection: close``,
so every tool opens a connection per request against it; against real S3 clients keep connections
alive. Charging the handshake (``connect_rtt=True``) would make each request cost two round trips
here where it costs one there.

    python bench/latency_proxy.py --upstream 127.0.0.1:5000 --rtt-ms 50   # prints the port, runs until killed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time

CHUNK_BYTES = 256 << 10


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy reader -> writer, each chunk released ``delay_s`` after it arrived, order kept."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while True:
            data = await reader.read(CHUNK_BYTES)
            await queue.put((loop.time() + delay_s, data))
            if not data:
                return

    async def write() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    r = asyncio.create_task(read())
    try:
        await write()
    finally:
        r.cancel()


class LatencyProxy:
    """Listens on 127.0.0.1:``port`` (0: any free port) and forwards to ``upstream`` with ``rtt_s``."""

    def __init__(
        self, upstream_host: str, upstream_port: int, rtt_s: float, port: int = 0, connect_rtt: bool = False
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rtt_s = rtt_s
        self.port = port
        self.connect_rtt = connect_rtt
        self.connections = 0
        # asyncio (3.11) drops its reference to a connection's handler when the client closes:
        # without one here, a handler still forwarding the last bytes can be garbage-collected.
        self._handlers: set[asyncio.Task[None]] = set()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = asyncio.current_task()
        if me is not None:
            self._handlers.add(me)
            me.add_done_callback(self._handlers.discard)
        try:
            if self.connect_rtt:
                await asyncio.sleep(self.rtt_s)  # the handshake a real far-away server costs
            ur, uw = await asyncio.open_connection(*self.upstream)
        except OSError:
            cw.close()
            return
        half = self.rtt_s / 2
        try:
            await asyncio.gather(_pump(cr, uw, half), _pump(ur, cw, half), return_exceptions=True)
        finally:
            for w in (uw, cw):
                with contextlib.suppress(OSError, RuntimeError):
                    w.close()

    async def serve(self, ready: threading.Event | None = None) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready.set()
        async with server:
            await server.serve_forever()

    def start_in_thread(self) -> LatencyProxy:
        """Serve from a daemon thread (its own event loop); returns once the port is known."""
        ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self.serve(ready)), daemon=True, name="latency-proxy").start()
        if not ready.wait(10):
            raise RuntimeError("latency proxy did not start")
        return self


def measured_rtt_s(port: int, tries: int = 5) -> float:
    """Median time of a tiny HTTP exchange through the proxy (server time included)."""
    import http.client

    times = []
    for _ in range(tries):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        t0 = time.perf_counter()
        c.request("HEAD", "/")
        c.getresponse().read()
        times.append(time.perf_counter() - t0)
        c.close()
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="host:port of the real server")
    ap.add_argument("--rtt-ms", type=float, required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--connect-rtt", action="store_true", help="charge one round trip per new connection")
    args = ap.parse_args()
    host, _, port = args.upstream.rpartition(":")
    proxy = LatencyProxy(host, int(port), args.rtt_ms / 1000, args.port, args.connect_rtt)
    ready = threading.Event()

    async def run() -> None:
        task = asyncio.create_task(proxy.serve(ready))
        while not ready.is_set():
            await asyncio.sleep(0.01)
        print(proxy.port, flush=True)
        await task

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    sys.exit(0)


if __name__ == "__main__":
    main()
