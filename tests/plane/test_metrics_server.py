"""The pods' metrics endpoint (plane.metrics.MetricsServer): silent, trickling and oversized
clients cost no threads and are cut off by timeouts, a scrape works all the while, only
/metrics is served.

prometheus_client's start_http_server kept a thread per idle socket with no timeout: 200 silent
sockets meant 213 threads in a pod. These tests open the same 200 sockets against the server in
this process and against a real pod process.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request

import psutil
import pytest

from plane import local
from plane.metrics import MetricsServer, PodMetrics

USUAL_NAMES = ("modelmesh_api_request_milliseconds", "mesh_model_requests_total", "mesh_model_request_milliseconds",
               "modelmesh_loadmodel_milliseconds", "modelmesh_instance_capacity_bytes", "modelmesh_models_loaded_total")


def scrape(port: int, path: str = "/metrics", timeout: float = 5.0) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout).read().decode()


def silent_sockets(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    return socks


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closed ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(max(0.01, within))
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@pytest.fixture
def pod_metrics():
    m = PodMetrics("pod-test")
    m.request("model-a", 3.0)
    m.load(120.0)
    server = m.serve(0)
    try:
        yield m, server
    finally:
        server.close()


def test_scrape_has_the_usual_names_and_only_metrics_is_served(pod_metrics):
    _, server = pod_metrics
    text = scrape(server.port)
    for name in USUAL_NAMES:
        assert name in text, name
    assert 'mesh_model_requests_total{modelId="model-a"} 1.0' in text
    for path in ("/", "/metrics/x", "/favicon.ico", "/../metrics"):
        with pytest.raises(urllib.error.HTTPError) as err:
            scrape(server.port, path)
        assert err.value.code == 404, path
    # a name filter, HEAD, POST, gzip, keep-alive: what Prometheus and curl send
    assert "modelmesh_loadmodel_milliseconds" not in scrape(server.port, "/metrics?name[]=mesh_evictions_total")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("HEAD", "/metrics")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b"" and int(resp.headers["Content-Length"]) > 0
    conn.request("POST", "/metrics", body=b"")
    resp = conn.getresponse()
    assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD"
    resp.read()
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})  # same connection: keep-alive
    resp = conn.getresponse()
    assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
    assert b"mesh_model_requests_total" in gzip.decompress(resp.read())
    conn.close()


def test_200_silent_sockets_cost_no_threads_and_are_closed(pod_metrics):
    _, server = pod_metrics
    before = threading.active_count()
    os_before = psutil.Process().num_threads()
    socks = silent_sockets(server.port, 200)
    try:
        t0 = time.monotonic()
        for _ in range(5):  # scrapes during the flood
            assert "mesh_model_requests_total" in scrape(server.port)
        assert time.monotonic() - t0 < 5
        assert threading.active_count() - before < 20
        assert psutil.Process().num_threads() - os_before < 20
        assert server.open_connections <= server.max_connections
        deadline = time.monotonic() + server.head_timeout_s + 2  # every silent socket closed within the timeout
        still_open = [s for s in socks if not closed_by_server(s, deadline - time.monotonic())]
        assert still_open == [], f"{len(still_open)} silent sockets still open after the head timeout"
    finally:
        for s in socks:
            s.close()
    assert "mesh_model_requests_total" in scrape(server.port)  # and after
    assert threading.active_count() - before < 20


def test_trickling_and_oversized_heads_are_cut_off():
    registry = PodMetrics("p").registry
    server = MetricsServer(registry, port=0, head_timeout_s=1.5, idle_timeout_s=1.0, max_head_bytes=2048).start()
    try:
        # a slowloris: one byte every 0.3 s never completes its head within the 1.5 s deadline
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        t0 = time.monotonic()
        closed = False
        for ch in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100:
            try:
                s.sendall(bytes([ch]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.3)
            if time.monotonic() - t0 > 4:
                break
        assert closed or closed_by_server(s, 0.5)
        assert time.monotonic() - t0 < 3.5
        s.close()

        # a head larger than max_head_bytes: 431, then closed
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"b" * 4096 + b"\r\n\r\n")
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 431 ")
        s.close()

        # an idle keep-alive connection is closed after idle_timeout_s
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/metrics")
        assert conn.getresponse().read()
        assert conn.sock is not None
        assert closed_by_server(conn.sock, 3.0)
        conn.close()

        # garbage is a 400, not a crash
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(b"\x16\x03\x01 hello\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
        s.close()
        assert "modelmesh_loadmodel_milliseconds" in scrape(server.port)
    finally:
        server.close()


def test_a_busy_server_refuses_new_connections_at_once():
    server = MetricsServer(PodMetrics("p").registry, port=0, max_connections=2).start()
    try:
        socks = silent_sockets(server.port, 2)
        time.sleep(0.2)
        for c in server._conns.values():  # both answering (as a slow reader would keep them)
            c.busy = True
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        assert closed_by_server(extra, 2.0)
        assert server.refused == 1 and server.open_connections == 2
        for c in server._conns.values():
            c.busy = False
        assert "mesh_evictions_total" in scrape(server.port)  # evicts the longest idle one
        assert server.evicted >= 1
        for s in [*socks, extra]:
            s.close()
    finally:
        server.close()


def test_port_in_use_raises_in_the_caller():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        with pytest.raises(OSError):
            PodMetrics("p").serve(holder.getsockname()[1])
    finally:
        holder.close()


@pytest.mark.slow
def test_a_real_pod_survives_200_silent_sockets(settings, tmp_path):
    """The same flood against a pod process: its thread count stays bounded, scrapes keep working."""
    settings = settings.model_copy(update={"grpc_port": local.free_port(), "lease_ttl_s": 2, "preload": False})
    lp = local.up(settings, pods=1)
    try:
        pod = lp.pods[0]
        proc = psutil.Process(pod.pid)
        assert "modelmesh_instance_capacity_bytes" in scrape(pod.metrics_port, timeout=10)
        before = proc.num_threads()
        socks = silent_sockets(pod.metrics_port, 200)
        try:
            time.sleep(0.5)
            assert "modelmesh_instance_capacity_bytes" in scrape(pod.metrics_port, timeout=10)
            assert proc.num_threads() - before < 20, (before, proc.num_threads())
            deadline = time.monotonic() + 7
            still_open = [s for s in socks if not closed_by_server(s, deadline - time.monotonic())]
            assert still_open == []
        finally:
            for s in socks:
                s.close()
        assert "modelmesh_instance_capacity_bytes" in scrape(pod.metrics_port, timeout=10)
    finally:
        local.down(settings.state_dir)
