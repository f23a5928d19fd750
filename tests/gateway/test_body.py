import json

import pytest

from gateway.body import ChatBody, scan_object
from gateway.errors import InvalidRequest

RAW = (
    b'{ "model" : "support",\n "messages": [{"role": "user", "content": "h\\u00e9 \\"x\\""}],'
    b'\n "temperature": 0.70 }'
)


def test_members_keep_their_source_text():
    members = scan_object(RAW.decode())
    assert [m.key for m in members] == ["model", "messages", "temperature"]
    assert members[1].text == '"messages": [{"role": "user", "content": "h\\u00e9 \\"x\\""}]'
    assert members[2].text == '"temperature": 0.70'


def test_only_the_model_changes_byte_for_byte():
    out = ChatBody.parse(RAW).for_upstream("tiny-llama")
    assert out == (
        b'{"model":"tiny-llama","messages": [{"role": "user", "content": "h\\u00e9 \\"x\\""}],'
        b'"temperature": 0.70}'
    )
    assert json.loads(out) == {**json.loads(RAW), "model": "tiny-llama"}


def test_streams_always_ask_upstream_for_usage():
    body = ChatBody.parse(b'{"model": "m", "messages": [{}], "stream": true}')
    assert not body.wants_usage
    assert json.loads(body.for_upstream("x"))["stream_options"] == {"include_usage": True}
    asked = ChatBody.parse(
        b'{"model": "m", "messages": [{}], "stream": true, "stream_options": {}}'
    )
    assert asked.wants_usage  # vLLM's default for include_usage is true
    options = b'"stream_options": {"include_usage": false}'
    refused = ChatBody.parse(b'{"model": "m", "messages": [{}], "stream": true, ' + options + b"}")
    assert not refused.wants_usage
    assert json.loads(refused.for_upstream("x"))["stream_options"] == {"include_usage": True}


def test_whole_requests_get_no_stream_options():
    body = ChatBody.parse(b'{"model": "m", "messages": [{}]}')
    assert "stream_options" not in json.loads(body.for_upstream("x"))


def test_shadow_copies_are_never_streamed():
    body = ChatBody.parse(b'{"model": "m", "messages": [{}], "stream": true, "stream_options": {}}')
    assert json.loads(body.for_shadow("c")) == {"model": "c", "messages": [{}], "stream": False}


@pytest.mark.parametrize(
    "raw", [b"", b"{", b'{"a" 1}', b'{"a": 1,}', b'{"a": 1} x', b"[]", b"{1: 2}", b"\xff"]
)
def test_malformed_bodies_are_invalid_requests(raw):
    with pytest.raises(InvalidRequest):
        ChatBody.parse(raw)


def test_empty_object_scans():
    assert scan_object(" {  } ") == []
