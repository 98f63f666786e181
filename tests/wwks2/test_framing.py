"""Framing on </WWKS>: any split of the stream gives the same messages."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispenser.wwks2.errors import FrameTooLarge
from dispenser.wwks2.framing import FrameSplitter

STATUS = b'<WWKS Version="2.0" TimeStamp="2025-01-10T08:00:01Z"><StatusRequest Id="8" ' \
         b'Source="100" Destination="999"/></WWKS>'
# A label's content may hold "<" and even "</WWKS>" inside CDATA: not the end.
LABELLED = (b'<WWKS Version="2.0" TimeStamp="2025-01-10T08:00:01Z"><OutputRequest Id="9" '
            b'Source="100" Destination="999"><Details OutputDestination="1"/><Criteria '
            b'ArticleId="A1" Quantity="1"><Label TemplateId="T"><Content><![CDATA[a < b '
            b'</WWKS> </WWKS ]] <x>]]></Content></Label></Criteria></OutputRequest></WWKS>')
COMMENTED = b'<WWKS Version="2.0"><!-- </WWKS> --><KeepAliveRequest Id="1"/></WWKS>'


def test_one_byte_at_a_time() -> None:
    splitter = FrameSplitter(1 << 20)
    stream = STATUS + LABELLED
    found = []
    for i in range(len(stream)):
        found += splitter.feed(stream[i:i + 1])
    assert found == [STATUS, LABELLED]
    assert splitter.pending == 0


def test_several_messages_in_one_read_with_whitespace_between() -> None:
    splitter = FrameSplitter(1 << 20)
    found = splitter.feed(b"\r\n  " + STATUS + b"\n\t " + LABELLED + b"  \n" + COMMENTED
                          + b"\n<WWKS")
    assert found == [STATUS, LABELLED, COMMENTED]
    assert splitter.pending == len(b"<WWKS")


def test_cdata_keeps_the_end_tag_inside_the_message() -> None:
    splitter = FrameSplitter(1 << 20)
    head, tail = LABELLED.split(b"<![CDATA[")
    assert splitter.feed(head + b"<![CD") == []
    assert splitter.feed(b"ATA[" + tail) == [LABELLED]


def test_end_tag_split_across_reads() -> None:
    splitter = FrameSplitter(1 << 20)
    assert splitter.feed(STATUS[:-4]) == []
    assert splitter.feed(STATUS[-4:]) == [STATUS]


def test_a_message_over_the_limit_is_refused_with_the_ones_before_it() -> None:
    splitter = FrameSplitter(len(STATUS) + 10)
    with pytest.raises(FrameTooLarge) as caught:
        splitter.feed(STATUS + b"<WWKS>" + b"x" * 1000)
    assert caught.value.frames == [STATUS]
    assert caught.value.limit == len(STATUS) + 10


def test_the_limit_counts_the_end_tag_and_not_whitespace_between_messages() -> None:
    splitter = FrameSplitter(len(STATUS))
    assert splitter.feed(b" " * 10_000 + STATUS + b" " * 10_000) == [STATUS]
    with pytest.raises(FrameTooLarge):
        FrameSplitter(len(STATUS) - 1).feed(STATUS)


def test_an_unterminated_cdata_runs_into_the_limit() -> None:
    splitter = FrameSplitter(4096)
    splitter.feed(b"<WWKS><X><![CDATA[ </WWKS>")
    with pytest.raises(FrameTooLarge):
        for _ in range(10):
            splitter.feed(b"</WWKS>" * 100)


@settings(max_examples=200, deadline=None)
@given(order=st.lists(st.sampled_from([STATUS, LABELLED, COMMENTED]), min_size=1,
                      max_size=6),
       gaps=st.lists(st.sampled_from([b"", b" ", b"\r\n", b"\n\n\t"]), min_size=6,
                     max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_any_split_of_the_stream_gives_the_same_messages(
        order: list[bytes], gaps: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(gap + message for gap, message in zip(gaps, order, strict=False))
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    splitter = FrameSplitter(1 << 20)
    found = []
    for start, end in itertools.pairwise(points):
        found += splitter.feed(stream[start:end])
    assert found == order
