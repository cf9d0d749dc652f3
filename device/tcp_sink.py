#!/usr/bin/env python3
"""TCP sink for the plainsight pipeline: masked PCM on stdin -> every client on 127.0.0.1:PORT.

Live audio is not buffered for absent clients: while nobody is connected, chunks are
dropped. A client that cannot keep up (send would block for > 1 s) is disconnected.
At EOF on stdin (the filter ended) all clients are closed and the sink exits 0.
Only ever forwards what arrives on stdin, i.e. the filter's output.
"""

import argparse
import os
import selectors
import socket
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--max-clients", type=int, default=4)
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"plainsight-tcp-sink: error: bad port {args.port}", file=sys.stderr)
        return 2
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind((args.host, args.port))
    except OSError as exc:
        print(
            f"plainsight-tcp-sink: error: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 2
    server.listen(args.max_clients)
    server.setblocking(False)
    print(f"plainsight-tcp-sink: listening on {args.host}:{args.port}", file=sys.stderr)
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin.buffer.raw, selectors.EVENT_READ, "audio")
    clients: list[socket.socket] = []
    stdin_fd = sys.stdin.buffer.raw.fileno()
    carry = b""
    try:
        while True:
            for key, _ in sel.select():
                if key.data == "accept":
                    conn, peer = server.accept()
                    if len(clients) >= args.max_clients:
                        conn.close()
                        continue
                    conn.settimeout(1.0)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    clients.append(conn)
                    print(
                        f"plainsight-tcp-sink: client {peer[0]}:{peer[1]} connected",
                        file=sys.stderr,
                    )
                    continue
                data = os.read(stdin_fd, 65536)
                if not data:
                    return 0
                # Send whole 16-bit samples only, so a client joining later stays aligned.
                data, carry = carry + data, b""
                if len(data) % 2:
                    data, carry = data[:-1], data[-1:]
                for conn in list(clients):
                    try:
                        conn.sendall(data)
                    except OSError:
                        clients.remove(conn)
                        conn.close()
    finally:
        for conn in clients:
            conn.close()
        server.close()


if __name__ == "__main__":
    sys.exit(main())
