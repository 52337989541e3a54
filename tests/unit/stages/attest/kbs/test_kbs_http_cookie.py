"""The KBS's session cookie on the wire: read and written without SimpleCookie, as aiohttp would."""

from __future__ import annotations

import base64
import os
from http.cookies import SimpleCookie
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from ccpipe.stages.attest.kbs.http import COOKIE, KbsHttp, session_cookie

SEALED = base64.urlsafe_b64encode(os.urandom(2400)).rstrip(b"=").decode()  # an attested session's size


@pytest.mark.parametrize("header", [
    f"{COOKIE}={SEALED}",
    f"  {COOKIE}={SEALED} ",
    f"{COOKIE}={SEALED}; other=1",
    f"other=1; {COOKIE}={SEALED}",
    f'{COOKIE}="{SEALED}"',
    f"{COOKIE}=",
    "other=1",
    f"{COOKIE}=a b",
])
def test_kbs_session_cookie_is_what_aiohttp_reads(header: str) -> None:
    request = make_mocked_request("GET", "/kbs/v0/resource/a/b/c", headers={"Cookie": header})
    expected = make_mocked_request("GET", "/", headers={"Cookie": header}).cookies.get(COOKIE)
    assert session_cookie(request) == expected


def test_kbs_no_cookie_header_is_no_session() -> None:
    assert session_cookie(make_mocked_request("GET", "/kbs/v0/auth")) is None


def test_kbs_set_cookie_is_the_header_aiohttp_writes() -> None:
    http = KbsHttp.__new__(KbsHttp)
    http.core = SimpleNamespace(sessions=SimpleNamespace(timeout_s=300.0))  # type: ignore[assignment]
    ours = http._with_cookie(web.Response(body=b"{}"), SEALED)
    theirs = web.Response(body=b"{}")
    value = ours.headers["Set-Cookie"]
    expires = value.split("; expires=")[1].split(";")[0]
    theirs.set_cookie(COOKIE, SEALED, expires=expires)
    assert value == theirs.cookies.output(header="")[1:]
    parsed = SimpleCookie(value)  # what a client's cookie jar reads back
    assert parsed[COOKIE].value == SEALED and parsed[COOKIE]["path"] == "/"
