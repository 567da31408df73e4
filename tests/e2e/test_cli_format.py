"""`aiojobs-redis stats` shows the data format version found under the prefix."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import redis

from aiojobs_redis import cli
from aiojobs_redis.keys import FORMAT_VERSION, format_key, queues_key

NEWER = FORMAT_VERSION + 1


@pytest.fixture
def raw(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.mark.parametrize(
    ("stored", "line", "in_json"),
    [
        (None, "data format: none recorded (0.1's, version 1, or no data yet)", None),
        (str(FORMAT_VERSION), f"data format: version {FORMAT_VERSION} (this release reads", FORMAT_VERSION),
        (str(NEWER), f"data format: version {NEWER}, newer than this release reads", NEWER),
    ],
)
def test_stats_prints_the_format_version(
    stored: str | None,
    line: str,
    in_json: int | None,
    raw: redis.Redis,
    redis_url: str,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw.sadd(queues_key(prefix), "default")
    if stored is not None:
        raw.set(format_key(prefix), stored)
    assert cli.main(["stats", "--url", redis_url, "--prefix", prefix]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["default", "0", "0", "0", "0", "0", "no"]
    assert lines[2] == ""
    assert lines[3].startswith(line), lines
    assert cli.main(["stats", "--json", "--url", redis_url, "--prefix", prefix]) == 0
    [row] = [orjson.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert row["format_version"] == in_json
    assert raw.get(format_key(prefix)) == (None if stored is None else stored.encode()), (
        "stats writes nothing"
    )
