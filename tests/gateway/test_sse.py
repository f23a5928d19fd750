from hypothesis import given
from hypothesis import strategies as st

from gateway.sse import EventSplitter, event_data, parse_event


def test_events_are_cut_at_blank_lines_whatever_the_reads():
    stream = b'data: {"a": 1}\n\ndata: {"b": 2}\r\n\r\ndata: [DONE]\n\n'
    for size in (1, 3, 7, len(stream)):
        splitter, events = EventSplitter(), []
        for i in range(0, len(stream), size):
            events += splitter.feed(stream[i : i + size])
        assert b"".join(events) == stream
        assert len(events) == 3
        assert splitter.pending == b""


event_bodies = st.lists(
    st.text(alphabet='abc {}:"', min_size=1, max_size=30).map(lambda t: f"data: {t}"),
    min_size=1,
    max_size=40,
)


@given(event_bodies, st.lists(st.sampled_from([b"\n\n", b"\r\n\r\n"]), min_size=40), st.data())
def test_any_events_cut_anywhere_come_out_whole(bodies, ends, data):
    events = [body.encode() + end for body, end in zip(bodies, ends, strict=False)]
    stream = b"".join(events)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=10)))
    splitter, out = EventSplitter(), []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += splitter.feed(stream[start:stop])
    assert out == events
    assert splitter.pending == b""


def test_event_data_and_parsing():
    assert event_data(b": keep-alive\n\n") is None
    assert parse_event(b"data: [DONE]\n\n").done
    usage = parse_event(b'data: {"choices": [], "usage": {"completion_tokens": 3}}\n\n')
    assert usage.is_usage_only
    error = parse_event(b'data: {"error": {"message": "boom"}}\n\n')
    assert error.error == {"message": "boom"}
    assert parse_event(b"data: not json\n\n").chunk is None
    assert parse_event(b'data: {"choices": "not a list"}\n\n').chunk is None
    multi_line = parse_event(b'data: {"choices":\ndata: [{"delta": {"content": "hi"}}]}\n\n')
    assert multi_line.chunk.choices[0].delta.content == "hi"
