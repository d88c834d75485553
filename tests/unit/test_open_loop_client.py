"""The benchmark's open-loop client parses the API's HTTP/1.1 responses however the bytes are split."""

from __future__ import annotations

import pytest

from bench.open_loop_client import ResponseError, _Response

BODY = b'{"wallet_id": "w-1", "balance": "1.00"}'
CONTENT_LENGTH = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
CHUNKED = (b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")


@pytest.mark.parametrize("raw, status", [(CONTENT_LENGTH, 200), (CHUNKED, 409)])
def test_a_response_split_at_every_byte_completes_once_with_its_status(raw, status):
    for cut in range(1, len(raw)):
        response = _Response()
        assert response.feed(raw[:cut]) == b""
        assert not response.done
        assert response.feed(raw[cut:]) == b""
        assert response.done and response.status == status


def test_a_response_is_not_done_before_its_last_body_byte():
    response = _Response()
    response.feed(CONTENT_LENGTH[:-1])
    assert not response.done


def test_connection_close_ends_keep_alive():
    response = _Response()
    response.feed(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert response.done and response.status == 503 and not response.keep_alive


@pytest.mark.parametrize("raw", [b"SMTP 220 hello\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody"])
def test_a_response_it_cannot_frame_is_an_error(raw):
    with pytest.raises(ResponseError):
        _Response().feed(raw)
