"""The Python SDK's Watch cursor: it resumes after the attempt and sequence of the last chunk
received (the end-to-end proof across a failover is tests/integration/test_watch_resume.py)."""

from __future__ import annotations

from fleetwire_client import Token, WatchCursor


def test_the_start_asks_for_every_chunk() -> None:
    request = WatchCursor().request("job-1")
    assert (request.job_id, request.after_attempt, request.after_sequence) == ("job-1", 0, 0)


def test_the_cursor_is_the_last_chunks_attempt_and_sequence() -> None:
    cursor = WatchCursor().after(Token(3, "c", 1, 1)).after(Token(1, "a", 1, 2))
    assert cursor == WatchCursor(attempt=2, sequence=1)
    request = cursor.request("job-1")
    assert (request.after_attempt, request.after_sequence) == (2, 1)


def test_an_old_style_cursor_is_sent_as_given_until_a_chunk_arrives() -> None:
    request = WatchCursor(sequence=4).request("job-1")
    assert (request.after_attempt, request.after_sequence) == (0, 4)
