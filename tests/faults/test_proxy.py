"""The TCP proxy the broker-cut row puts between workers and their broker."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import NewTopic

from connector.broker import EmbeddedBroker, free_port
from connector.client import DeliveryError, RequestProducer, make_request
from connector.config import KafkaSettings, Settings, TopicNames
from connector.testing.proxy import TcpProxy
from connector.topics import admin_client


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo_proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with TcpProxy("127.0.0.1", server.server_address[1]) as proxy:
        yield proxy
    server.shutdown()
    server.server_close()


def _connect(proxy: TcpProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


def _echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    received = b""
    while len(received) < len(data) and (chunk := sock.recv(4096)):
        received += chunk
    return received


def _closed(sock: socket.socket) -> bool:
    """Whether the peer closed the connection (end of stream or reset)."""
    try:
        return sock.recv(16) == b""
    except ConnectionResetError:
        return True


def test_bytes_pass_both_ways(echo_proxy):
    with _connect(echo_proxy) as sock:
        assert _echo(sock, b"hello" * 1000) == b"hello" * 1000


def test_a_reset_cut_closes_open_and_new_connections_until_healed(echo_proxy):
    with _connect(echo_proxy) as before:
        assert _echo(before, b"before") == b"before"
        echo_proxy.cut("reset")
        assert _closed(before)
    with _connect(echo_proxy) as during:
        assert _closed(during)
    echo_proxy.heal()
    with _connect(echo_proxy) as after:
        assert _echo(after, b"after") == b"after"


def test_a_blackhole_holds_bytes_until_healed(echo_proxy):
    with _connect(echo_proxy) as sock:
        assert _echo(sock, b"x") == b"x"
        echo_proxy.cut("blackhole")
        sock.sendall(b"held")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        echo_proxy.heal()
        sock.settimeout(5)
        assert sock.recv(16) == b"held"


@pytest.mark.integration
def test_a_broker_advertising_the_proxy_is_reached_only_through_it(tmp_path):
    proxy_port = free_port()
    broker = EmbeddedBroker(advertised_port=proxy_port, log_path=tmp_path / "broker.log")
    with broker, TcpProxy("127.0.0.1", broker.port, port=proxy_port) as proxy:
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=proxy.address),
            topics=TopicNames(deferred="via-proxy"),
        )
        admin = admin_client(settings)
        assert {b.port for b in admin.list_topics(timeout=10).brokers.values()} == {proxy.port}
        admin.create_topics([NewTopic("via-proxy", 1, 1)])["via-proxy"].result(10)
        request = make_request(
            "r1", "openai", "gpt-4o-mini", "/v1/chat/completions", {"messages": []}
        )
        with RequestProducer(settings) as producer:
            with proxy.outage("reset"), pytest.raises(DeliveryError, match="not confirmed"):
                producer.send(request)
                producer.flush(timeout=2)
            assert producer.flush(timeout=30) == 1
