import os
import signal
import subprocess
import time

from serving.process import free_port, group_members, log_tail


def test_group_members_sees_the_whole_group_and_then_none():
    leader = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while len(group_members(leader.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(group_members(leader.pid)) == 3  # sh and both sleeps
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
    deadline = time.monotonic() + 5
    while group_members(leader.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(leader.pid) == []


def test_log_tail_keeps_the_last_lines(tmp_path):
    log = tmp_path / "vllm.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(log, lines=2) == "line 98\nline 99\n"
    assert log_tail(tmp_path / "missing.log") == "(no log written)"


def test_free_port_can_be_bound():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
