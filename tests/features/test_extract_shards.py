"""Shard files of `emofuse extract --shard`, without the extraction stack."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from emofuse.data.dataset import DataFormatError
from emofuse.errors import OptionError
from emofuse.features.pool import ClipResult
from emofuse.features.shards import (
    SHARD_FORMAT,
    _read_shard,
    parse_shard,
    shard_from_environment,
    shard_option,
)


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


def _slurm(task_id: int, low: int, high: int, count: int | None = None,
           step: int | None = 1) -> dict[str, str]:
    env = {"SLURM_ARRAY_TASK_ID": str(task_id), "SLURM_ARRAY_TASK_MIN": str(low),
           "SLURM_ARRAY_TASK_MAX": str(high)}
    if count is not None:
        env["SLURM_ARRAY_TASK_COUNT"] = str(count)
    if step is not None:
        env["SLURM_ARRAY_TASK_STEP"] = str(step)
    return env


def test_shard_auto_from_a_slurm_array_counts_from_its_first_id() -> None:
    # --array=0-7: the task id is the shard
    assert shard_from_environment(_slurm(3, 0, 7, count=8)) == (3, 8)
    assert shard_from_environment(_slurm(0, 0, 7, count=8)) == (0, 8)
    # --array=1-8: ids start at 1, shards at 0
    assert shard_from_environment(_slurm(1, 1, 8, count=8)) == (0, 8)
    assert shard_from_environment(_slurm(8, 1, 8, count=8)) == (7, 8)
    # no SLURM_ARRAY_TASK_COUNT (older Slurm): n = MAX - MIN + 1
    assert shard_from_environment(_slurm(5, 1, 8, step=None)) == (4, 8)
    # only the id and the count: the ids are taken as 0..n-1
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}) == (2, 4)


def test_shard_auto_refuses_an_array_whose_ids_are_not_0_to_n_minus_1() -> None:
    with pytest.raises(OptionError, match="stepped job array.*SLURM_ARRAY_TASK_STEP=2"):
        shard_from_environment(_slurm(4, 0, 14, count=8, step=2))  # --array=0-15:2
    with pytest.raises(OptionError, match="not contiguous"):
        shard_from_environment(_slurm(3, 0, 7, count=3))  # --array=0,3,7
    with pytest.raises(OptionError, match="SLURM_ARRAY_TASK_ID=9 is task 9 .* of 8, out of range"):
        shard_from_environment({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "8"})
    with pytest.raises(OptionError, match="neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MIN/MAX"):
        shard_from_environment({"SLURM_ARRAY_TASK_ID": "2"})


def test_shard_auto_from_rank_and_world_size_and_slurm_first() -> None:
    assert shard_from_environment({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}) == (2, 4)
    both = {**_slurm(5, 0, 7, count=8), "RANK": "0", "WORLD_SIZE": "2"}
    assert shard_from_environment(both) == (5, 8)
    with pytest.raises(OptionError, match="RANK is set but WORLD_SIZE is not"):
        shard_from_environment({"RANK": "1"})


def test_shard_auto_without_a_scheduler_names_what_it_looked_for() -> None:
    with pytest.raises(OptionError) as caught:
        shard_from_environment({"HOME": "/root", "LOCAL_RANK": "0"})
    message = str(caught.value)
    assert "\n" not in message and "give --shard i/n" in message
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "RANK", "WORLD_SIZE"):
        assert name in message


@pytest.mark.parametrize(("env", "named"), [
    ({"SLURM_ARRAY_TASK_ID": "three", "SLURM_ARRAY_TASK_COUNT": "8"}, "SLURM_ARRAY_TASK_ID='three'"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "8x"}, "SLURM_ARRAY_TASK_COUNT='8x'"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "0"}, "SLURM_ARRAY_TASK_COUNT=0"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "", "SLURM_ARRAY_TASK_MAX": "8"},
     "SLURM_ARRAY_TASK_MIN=''"),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_MAX": "1"},
     "SLURM_ARRAY_TASK_MIN=3 SLURM_ARRAY_TASK_MAX=1"),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"},
     "SLURM_ARRAY_TASK_ID=0"),
    ({"RANK": "-1", "WORLD_SIZE": "4"}, "RANK=-1"),
    ({"RANK": "4", "WORLD_SIZE": "4"}, "RANK=4"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
    ({"RANK": "0", "WORLD_SIZE": "four"}, "WORLD_SIZE='four'"),
])
def test_shard_auto_names_a_malformed_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(OptionError, match=re.escape(named)):
        shard_from_environment(env)


def test_parse_shard_auto_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                 "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(OptionError, match="found no scheduler variables"):
        parse_shard("auto")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert parse_shard("auto") == (1, 3)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MAX", "8")
    assert parse_shard("auto") == (3, 8) and parse_shard("2/5") == (2, 5)
    # the command line's value: resolved once, and one line on stderr says where from
    assert shard_option("auto") == (3, 8) and shard_option("0/2") == (0, 2) and shard_option(None) is None
    assert capsys.readouterr().err == "shard 3/8 (from SLURM_ARRAY_TASK_ID)\n"


def test_an_auto_shard_is_written_beside_out_under_its_own_name():
    from emofuse.features.shards import shard_path

    assert shard_path("shards/feat.pkl", (3, 8)) == Path("shards/feat.3-of-8.pkl")
    names = {shard_path("feat.pkl", (i, 8)).name for i in range(8)}
    assert len(names) == 8
