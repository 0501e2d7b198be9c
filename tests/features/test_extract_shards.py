"""Shard files of `emofuse extract --shard`, without the extraction stack."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from emofuse.data.dataset import DataFormatError
from emofuse.features.pool import ClipResult
from emofuse.features.shards import SHARD_FORMAT, _read_shard, parse_shard


def test_parse_shard() -> None:
    assert parse_shard("2/8") == (2, 8) and parse_shard(None) is None
    for bad in ("8/8", "1/0", "a/b", "3"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_a_shard_written_before_clip_result_moved_still_reads(tmp_path: Path) -> None:
    """Shard files pickle ClipResult by module path; those written when it lived in
    emofuse.features.extract read back as today's ClipResult."""
    result = ClipResult("v$_$1", "/x/v/1.mp4", "no_face", "no face was found")
    payload = {"format": SHARD_FORMAT, "version": 1, "results": [result]}
    # protocol 0 names classes as plain text lines, so the old module path can be put back in
    old = pickle.dumps(payload, protocol=0).replace(b"cemofuse.features.pool\nClipResult\n",
                                                    b"cemofuse.features.extract\nClipResult\n")
    assert b"emofuse.features.extract\nClipResult" in old
    path = tmp_path / "old.shard.pkl"
    path.write_bytes(old)
    back = _read_shard(path)["results"]
    assert back == [result] and type(back[0]) is ClipResult


def test_a_file_that_is_no_shard_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"format": "something else"}))
    with pytest.raises(DataFormatError, match="is not an `emofuse extract --shard` output"):
        _read_shard(path)
    path.write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="is not a readable shard file"):
        _read_shard(path)
