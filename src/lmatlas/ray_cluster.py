"""Connecting to Ray for the model work of ``ray_data``: the options, importing Ray only when it is
asked for, checking a cluster's address, and the session (a cluster's, the process's own, or a
Ray instance on this machine started for the work and shut down after).

Everything is bounded: an address is probed first (a TCP connection and a gRPC call of the
head's GCS over HTTP/2, 10 s at most, or ``timeout`` if shorter), because Ray, given an address
where no Ray head answers, retries for minutes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import LmatlasError

INSTALL = "pip install 'lmatlas[ray]'"
PROBE_SECONDS = 10.0
_GCS_CALL = "/ray.rpc.NodeInfoGcsService/GetClusterId"
_STATUS_200 = 0x88  # HPACK's static entry 8, ":status: 200", as gRPC servers send it
_UNAUTHENTICATED = b"grpc-status\x0216"  # gRPC's status 16, as a literal header (the GCS's answer without a token)


@dataclass(frozen=True)
class RayOptions:
    """How model work runs on Ray.

    ``address``: ``HOST:PORT`` of a running cluster's head, or None for a Ray instance on this
    machine (``local_cpus`` CPUs, default all) started for the call. ``actors``: the pool of
    model copies (default: one per CPU of the cluster, at most one per block);
    ``cpus_per_actor``: the CPUs each reserves (a fraction leaves the rest for Ray's own tasks;
    a whole number also sets the actor's threads); ``rows_per_batch``: the rows of one block, what
    an actor takes at a time; ``timeout``: seconds without a block of results before the job is
    given up; ``scratch``: where the shards' temporary folder goes (default: the system's).
    """

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 0.5
    rows_per_batch: int = 256
    timeout: float = 600.0
    local_cpus: int | None = None
    scratch: str | os.PathLike | None = None

    def __post_init__(self):
        if self.actors is not None and (not isinstance(self.actors, int) or self.actors < 1):
            raise LmatlasError(f"actors={self.actors}: a Ray job needs at least one actor")
        if not self.cpus_per_actor > 0:
            raise LmatlasError(f"cpus_per_actor={self.cpus_per_actor:g}: each actor needs more than 0 CPUs")
        if not isinstance(self.rows_per_batch, int) or self.rows_per_batch < 1:
            raise LmatlasError(f"rows_per_batch={self.rows_per_batch}: a block needs at least one row")
        if not self.timeout > 0:
            raise LmatlasError(f"timeout={self.timeout:g}: the Ray job needs more than 0 seconds")
        if self.local_cpus is not None and self.local_cpus < 1:
            raise LmatlasError(f"local_cpus={self.local_cpus}: a local Ray instance needs at least one CPU")


def ray_options(ray: Any) -> RayOptions | None:
    """The ``ray=`` argument of the library's calls: None or False (no Ray), True (a local
    instance), an address, or ``RayOptions``."""
    if ray is None or ray is False:
        return None
    if ray is True:
        return RayOptions()
    if isinstance(ray, str):
        return RayOptions(address=ray or None)
    if isinstance(ray, RayOptions):
        return ray
    raise LmatlasError(f"ray={ray!r}: give True, a cluster's HOST:PORT or a RayOptions")


def import_ray():
    """The ``ray`` module with Ray Data, or one sentence on how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise LmatlasError(f"running on Ray needs the ray package with Ray Data: {INSTALL}") from None
    return ray


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or "/" in address:
        raise LmatlasError(f"ray={address}: a Ray address is HOST:PORT, the head node's address that `ray start --head` prints")
    return host, int(port)


def check_address(address: str, seconds: float = PROBE_SECONDS) -> None:
    """That a Ray head's GCS (a gRPC server) answers at ``address``, within ``seconds``, and
    lets this process in: Ray itself, given a port that accepts connections but is not a Ray
    head, or a head that wants a token this process does not send, retries for minutes."""
    host, port = _split_address(address)
    try:
        answer = _grpc_call(host, port, seconds)
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise LmatlasError(f"ray={address}: no Ray cluster answers there ({why}); start one with `ray start --head`, "
                           "or leave the address out to run on this machine") from None
    if not answer or answer[0] != _STATUS_200:
        raise LmatlasError(f"ray={address}: something answers there, but not a Ray cluster's head; "
                           "give the address that `ray start --head` prints")
    # Ray sends a token to a cluster named by its address only when told to (RAY_AUTH_MODE).
    if _UNAUTHENTICATED in answer and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        raise LmatlasError(f"ray={address}: the Ray cluster there asks for its token; set RAY_AUTH_MODE=token, "
                           "with the token in RAY_AUTH_TOKEN or ~/.ray/auth_token")


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _header(name: bytes | int, value: str) -> bytes:
    """An HPACK literal header field, never indexed: a static table name index, or a new name."""
    named = bytes([name]) if isinstance(name, int) else b"\x00" + bytes([len(name)]) + name
    return named + bytes([len(value)]) + value.encode()


def _grpc_call(host: str, port: int, seconds: float) -> bytes | None:
    """The HTTP/2 response headers (HPACK) to a gRPC call of the GCS (``_STATUS_200`` first for
    a gRPC server), or None when none come; an ``OSError`` when nothing answers in time."""
    headers = (b"\x83\x86" + _header(4, _GCS_CALL) + _header(1, f"{host}:{port}")  # POST, http, :path, :authority
               + _header(b"content-type", "application/grpc") + _header(b"te", "trailers"))
    hello = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0) + _frame(1, 4, 1, headers)
             + _frame(0, 1, 1, b"\x00" * 5))  # SETTINGS; HEADERS; an empty message, END_STREAM
    deadline = time.monotonic() + seconds
    with socket.create_connection((host, port), timeout=seconds) as s:
        s.sendall(hello)
        got = b""
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                return None
            got += chunk
            while len(got) >= 9 and len(got) >= 9 + int.from_bytes(got[:3], "big"):
                size, kind, stream = int.from_bytes(got[:3], "big"), got[3], int.from_bytes(got[5:9], "big") & 0x7FFFFFFF
                payload, got = got[9 : 9 + size], got[9 + size :]
                if kind == 1 and stream == 1:  # the response's HEADERS: ":status" comes first
                    return payload
                if kind == 7:  # GOAWAY
                    return None
    raise socket.timeout("timed out")


def _same_cluster(address: str, gcs_address: str) -> bool:
    (host, port), (gcs_host, gcs_port) = _split_address(address), _split_address(gcs_address)
    if port != gcs_port:
        return False
    try:
        ip = socket.gethostbyname(host)
    except OSError:
        return False
    return host == gcs_host or ip == gcs_host or ip.startswith("127.")


@contextlib.contextmanager
def session(opts: RayOptions) -> Iterator[Any]:
    """The ``ray`` module, connected for the work: to the cluster at ``opts.address``, to the
    one this process is already connected to, or to a local instance started (and shut down
    after) for it."""
    ray = import_ray()
    if opts.address is not None:
        check_address(opts.address, min(PROBE_SECONDS, opts.timeout))
    if ray.is_initialized():
        gcs = ray.get_runtime_context().gcs_address
        if opts.address is not None and not _same_cluster(opts.address, gcs):
            raise LmatlasError(f"ray={opts.address}: this process is already connected to the Ray cluster at {gcs}")
        yield ray
        return
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if opts.address is None:
            ray.init(address="local", num_cpus=opts.local_cpus or os.cpu_count() or 1, **quiet)
        else:
            # This lmatlas goes to the cluster with the job, ahead of any the nodes have: the
            # actors run the code that sent them (the nodes need its dependencies).
            here = str(Path(__file__).resolve().parent)
            ray.init(address=opts.address, runtime_env={"py_modules": [here], "excludes": ["__pycache__"]}, **quiet)
    except (ConnectionError, RuntimeError) as e:
        where = f"ray={opts.address}" if opts.address else "a local Ray instance"
        raise LmatlasError(f"{where}: Ray could not start or connect ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    try:
        yield ray
    finally:
        ray.shutdown()
