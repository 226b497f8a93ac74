"""The error taxonomy: whose failure each outcome is, and what each view of the stats keeps.

Only backend-caused outcomes from fairly chosen requests reach what judges a variant (the
rollout judge's snapshots); Prometheus' counters keep every response with its real status.
"""

from __future__ import annotations

import inspect

import aiohttp
import pytest

import proxy.errors as errors
from proxy.errors import (
    BadPinError,
    BadRequestError,
    BadTargetError,
    BodyTooLargeError,
    Cause,
    ClientClosedError,
    ClientTimeoutError,
    ConfigError,
    NoRouteError,
    OverloadedError,
    ProxyError,
    SplitwayError,
    StoreError,
    UpstreamConnectError,
    UpstreamResetError,
    UpstreamTimeoutError,
    cause_of,
    error_body,
    headers_of,
    status_of,
)
from proxy.observe import VariantStats
from proxy.upstream import body_failure, translate

CAUSES = {
    NoRouteError: (Cause.CLIENT, 404), BadPinError: (Cause.CLIENT, 400),
    BadRequestError: (Cause.CLIENT, 400), BadTargetError: (Cause.CLIENT, 400),
    BodyTooLargeError: (Cause.CLIENT, 413), ClientClosedError: (Cause.CLIENT, 499),
    ClientTimeoutError: (Cause.CLIENT, 408), OverloadedError: (Cause.PROXY, 503),
    UpstreamConnectError: (Cause.BACKEND, 502), UpstreamResetError: (Cause.BACKEND, 502),
    UpstreamTimeoutError: (Cause.BACKEND, 504),
}


@pytest.mark.parametrize(("cls", "expected"), CAUSES.items(), ids=lambda x: getattr(
    x, "__name__", ""))
def test_each_data_plane_error_has_its_cause_and_status(
        cls: type[ProxyError], expected: tuple[Cause, int]) -> None:
    exc = cls("x")
    assert (cause_of(exc), status_of(exc)) == expected
    assert exc.cause.charged is (expected[0] is Cause.BACKEND)


def test_every_data_plane_error_is_classified_and_in_the_documented_tree() -> None:
    proxy_errors = {c for _, c in inspect.getmembers(errors, inspect.isclass)
                    if issubclass(c, ProxyError) and c is not ProxyError
                    and c is not errors.UpstreamError}
    assert proxy_errors == set(CAUSES)
    doc = errors.__doc__ or ""
    for cls in (c for _, c in inspect.getmembers(errors, inspect.isclass)
                if issubclass(c, SplitwayError)):
        assert cls.__name__ in doc, f"{cls.__name__} is missing from proxy/errors.py's tree"


def test_anything_else_is_the_proxys_never_the_backends() -> None:
    for exc in (ValueError("bug"), StoreError("db"), ConfigError([]), KeyError("k")):
        assert cause_of(exc) is Cause.PROXY and not cause_of(exc).charged


def test_overload_asks_the_client_to_retry_in_a_second() -> None:
    assert headers_of(OverloadedError("full")) == {"Retry-After": "1"}
    assert headers_of(BadTargetError("x")) == {}


def test_upstream_errors_name_the_backend_and_keep_the_address_for_the_log() -> None:
    os_error = ConnectionRefusedError(111, "Connection refused")
    key = aiohttp.client_reqrep.ConnectionKey("10.0.0.5", 9002, False, True, None, None, None)
    exc = aiohttp.ClientConnectorError(key, os_error)
    error = translate(exc, "sentiment-v2", "http://10.0.0.5:9002")
    assert isinstance(error, UpstreamConnectError)
    body = error_body(error, request_id="r", route="sentiment", variant="canary")
    assert body["detail"] == "cannot connect to sentiment-v2: Connection refused"
    assert "10.0.0.5" not in str(body) and "http://" not in str(body)
    assert error.internal.startswith("http://10.0.0.5:9002: ")
    for exc2, kind in ((TimeoutError(), UpstreamTimeoutError),
                       (aiohttp.ServerDisconnectedError(), UpstreamResetError)):
        e = translate(exc2, "sentiment-v2", "http://10.0.0.5:9002")
        assert isinstance(e, kind) and "10.0.0.5" not in e.detail


def test_a_failure_of_the_clients_body_is_not_the_backends() -> None:
    own = BodyTooLargeError("over")
    wrapped = aiohttp.ClientConnectionError("Failed to send bytes")
    wrapped.__cause__ = own
    assert body_failure(wrapped) is own
    closed = ClientClosedError("gone")
    os_wrapped = aiohttp.ClientOSError("Can not write request body")
    os_wrapped.__context__ = closed
    assert body_failure(os_wrapped) is closed
    assert body_failure(aiohttp.ServerDisconnectedError()) is None
    backend = aiohttp.ClientOSError("x")
    backend.__cause__ = UpstreamResetError("backend")
    assert body_failure(backend) is None


def test_only_backend_outcomes_of_fair_samples_reach_the_judges_snapshot() -> None:
    vs = VariantStats("r", "canary")
    vs.record(200, 0.010, 0.005, cause=Cause.BACKEND)
    vs.record(500, 0.020, 0.010, cause=Cause.BACKEND)  # the backend's own 500
    vs.record(502, 0.001, None, cause=Cause.BACKEND)  # connect refused
    vs.record(200, 0.010, 0.005, cause=Cause.BACKEND, aborted=True)  # cut mid-body
    # not the variant's doing:
    vs.record(400, 0.001, None, cause=Cause.CLIENT)  # bad target / malformed body
    vs.record(413, 0.001, None, cause=Cause.CLIENT)
    vs.record(499, 5.000, 0.005, cause=Cause.CLIENT)  # client went away
    vs.record(408, 30.00, 0.005, cause=Cause.CLIENT)  # client stalled its body
    vs.record(503, 0.001, None, cause=Cause.PROXY)  # our own limit
    vs.record(500, 0.020, 0.010, cause=Cause.BACKEND, judged=False)  # untrusted pin
    snap = vs.snapshot()
    assert (snap.requests, snap.errors) == (4, 3)
    assert snap.codes == {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 0, "5xx": 2}
    assert snap.latency.get_total_count() == 4
    assert snap.latency.get_max_value() < 25_000  # µs: the 5 s and 30 s never got in
    # ... while Prometheus sees every response with its real class
    assert vs.count == 10
    assert vs.codes() == {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 4, "5xx": 4}
    assert vs.duration_buckets()[-1] == 10
