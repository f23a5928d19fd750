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


def test_event_data_and_parsing():
    assert event_data(b": keep-alive\n\n") is None
    assert parse_event(b"data: [DONE]\n\n").done
    usage = parse_event(b'data: {"choices": [], "usage": {"completion_tokens": 3}}\n\n')
    assert usage.is_usage_only
    error = parse_event(b'data: {"error": {"message": "boom"}}\n\n')
    assert error.error == {"message": "boom"}
    assert parse_event(b"data: not json\n\n").payload is None
