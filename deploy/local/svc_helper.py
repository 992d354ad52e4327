#!/usr/bin/env python3
"""Standard-library helpers for deploy/local/services.sh (runs before any virtualenv exists).

    svc_helper.py free-ports N            N distinct free TCP ports on 127.0.0.1, one per line
    svc_helper.py port-free PORT          exit 0 when PORT can be bound on 127.0.0.1
    svc_helper.py cluster-id              a random Kafka cluster id (base64url of 16 random bytes)
    svc_helper.py kafka-ready HOST:PORT   exit 0 when the broker answers ApiVersions and a Metadata
                                          request that lists at least one (unfenced) broker

The readiness probe speaks the Kafka wire protocol directly: ApiVersions v0 (every broker must
accept v0 for version negotiation) then Metadata v4 (the lowest version Kafka 4.x still serves,
KIP-896). A broker only lists itself in Metadata once it is registered and unfenced, which is the
point where clients can produce and consume.
"""

from __future__ import annotations

import base64
import socket
import struct
import sys
import uuid

API_VERSIONS = 18
METADATA = 3
METADATA_VERSION = 4


def free_ports(count: int) -> list[int]:
    # Hold every socket open until all are chosen so that the ports are distinct.
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        s.close()
    return True


def cluster_id() -> str:
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not value.startswith("-"):  # Kafka's Uuid.randomUuid avoids ids that look like flags
            return value


def _request(sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes) -> bytes:
    client_id = b"newsmtl-probe"
    header = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _read_exact(sock, 4))[0]
    data = _read_exact(sock, size)
    if struct.unpack(">i", data[:4])[0] != correlation:
        raise RuntimeError("correlation id mismatch")
    return data[4:]


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


def kafka_ready(address: str) -> tuple[bool, str]:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3.0) as sock:
            sock.settimeout(3.0)
            resp = _request(sock, API_VERSIONS, 0, 1, b"")
            error = struct.unpack(">h", resp[:2])[0]
            if error != 0:
                return False, "ApiVersions error %d" % error
            # Metadata v4: topics = null (all), allow_auto_topic_creation = false.
            resp = _request(sock, METADATA, METADATA_VERSION, 2, struct.pack(">i?", -1, False))
            brokers = struct.unpack(">i", resp[4:8])[0]  # after throttle_time_ms
            if brokers < 1:
                return False, "metadata lists no broker yet"
            return True, "%d broker(s)" % brokers
    except (OSError, RuntimeError, struct.error) as exc:
        return False, "%s: %s" % (type(exc).__name__, exc)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "free-ports":
        for port in free_ports(int(argv[1])):
            print(port)
        return 0
    if len(argv) == 2 and argv[0] == "port-free":
        return 0 if port_free(int(argv[1])) else 1
    if argv == ["cluster-id"]:
        print(cluster_id())
        return 0
    if len(argv) == 2 and argv[0] == "kafka-ready":
        ok, why = kafka_ready(argv[1])
        print(why, file=sys.stderr)
        return 0 if ok else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
