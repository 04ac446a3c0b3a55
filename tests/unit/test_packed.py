"""shared/packed.py: a column packed into one text splits back into exactly its values, or is not
packed at all (the caller binds the array). PostgreSQL's `string_to_array(s, US)` is modelled here
by `_pg_split`; tests/component/test_packed_columns.py checks the real one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared import packed


def _pg_split(s: str) -> list[str]:
    return [] if s == "" else s.split(packed.SEP)  # string_to_array('', d) is an empty array


_TEXT = st.text(alphabet=st.sampled_from(["a", "-", ":", "é", "\x1f", " "]), max_size=6)


@given(st.lists(_TEXT, max_size=8))
def test_packed_texts_split_back_into_themselves_or_are_not_packed(values):
    joined = packed.texts(values)
    if joined is not None:
        assert _pg_split(joined) == values
    else:
        assert values == [] or values == [""] or any(packed.SEP in v for v in values)


@given(st.lists(st.binary(max_size=6) | st.sampled_from([b'{"a":1}', b"\x1f", b"\xc3\xa9"]), max_size=8))
def test_packed_blobs_split_back_into_themselves_or_are_not_packed(values):
    joined = packed.blobs(values)
    if joined is not None:
        assert [v.encode("ascii") for v in _pg_split(joined)] == values
    else:
        assert values == [] or values == [b""] or any(b"\x1f" in v or not v.isascii() for v in values)


def test_usual_values_pack():
    assert packed.texts(["org-1:u-1", "org-2:u-2"]) == "org-1:u-1\x1forg-2:u-2"
    assert packed.blobs([b'{"id":"1"}', b'{"id":"2"}']) == '{"id":"1"}\x1f{"id":"2"}'
    assert packed.texts(["", "x"]) is not None and packed.texts([""]) is None
