"""keys: name validation and the Redis key layout of one queue."""

from __future__ import annotations

import dataclasses

import pytest
from support.engine_calls import dispatch_marker

from aiojobs_redis.errors import ConfigurationError, InvalidJobId, InvalidQueueName
from aiojobs_redis.keys import (
    QueueKeys,
    format_key,
    parse_throughput_field,
    queues_key,
    throughput_field,
    validate_job_id,
    validate_prefix,
    validate_queue,
)


def cluster_hash_tag(key: str) -> str:
    """The part of `key` Redis Cluster hashes: the first non-empty {...}, else the whole key."""
    start = key.find("{")
    if start == -1:
        return key
    end = key.find("}", start + 1)
    if end == -1 or end == start + 1:
        return key
    return key[start + 1 : end]


@pytest.mark.parametrize(
    "name", ["payments", "a.b-c_d", "A", "0", "Q1", "a" * 64, "x" * 63, "...", "UPPER_lower"]
)
def test_validate_queue_accepts(name: str) -> None:
    assert validate_queue(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 65,
        "a:b",
        "{x}",
        "{",
        "}",
        "*",
        "a*",
        "a b",
        " payments",
        "payments ",
        "tab\t",
        "new\nline",
        "payments\n",
        "é",
        "caf\u00e9",
        "a/b",
        "a?",
        "[a]",
        None,
        5,
        b"payments",
        ["payments"],
    ],
    ids=repr,
)
def test_validate_queue_rejects(name: object) -> None:
    with pytest.raises(InvalidQueueName) as info:
        validate_queue(name)
    assert isinstance(info.value, ValueError)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("job_id", ["abc123", "A-b_c", "0", "a" * 64, "0lq3z1y7a0000abcde"])
def test_validate_job_id_accepts(job_id: str) -> None:
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize(
    "job_id",
    ["", "a" * 65, "a.b", "a:b", "{x}", "*", "a b", "tab\t", "id\n", "é", None, 5, b"abc"],
    ids=repr,
)
def test_validate_job_id_rejects(job_id: object) -> None:
    with pytest.raises(InvalidJobId) as info:
        validate_job_id(job_id)
    assert isinstance(info.value, ValueError)
    assert repr(job_id) in str(info.value)


@pytest.mark.parametrize("prefix", ["jobs:", "", "a.b-c_d:", "app:jobs:", "p" * 64])
def test_validate_prefix_accepts(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix", ["p" * 65, "{x}:", "jobs{", "a b:", "jobs*", "é:", "jobs:\n", None, 1], ids=repr
)
def test_validate_prefix_rejects(prefix: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        validate_prefix(prefix)
    assert isinstance(info.value, ValueError)
    assert repr(prefix) in str(info.value)


def test_queue_keys_layout() -> None:
    keys = QueueKeys.of("jobs:", "payments")
    assert keys.queue == "payments"
    assert keys.base == "jobs:{payments}"
    assert keys.ready == "jobs:{payments}:queue"
    assert keys.delayed == "jobs:{payments}:delayed"
    assert keys.running == "jobs:{payments}:running"
    assert keys.failed == "jobs:{payments}:failed"
    assert keys.wake == "jobs:{payments}:wake"
    assert keys.job_prefix == "jobs:{payments}:j:"
    assert keys.job("abc") == "jobs:{payments}:j:abc"
    assert keys.claim_receipt("w1") == "jobs:{payments}:claim:w1"
    assert dispatch_marker(keys, "abc") == "jobs:{payments}:dd:abc"
    assert queues_key("jobs:") == "jobs:queues"
    assert format_key("jobs:") == "jobs:format"


@pytest.mark.parametrize(("prefix", "queue"), [("jobs:", "payments"), ("", "a.b-c_d"), ("x:", "q")])
def test_every_queue_key_shares_one_hash_tag(prefix: str, queue: str) -> None:
    keys = QueueKeys.of(prefix, queue)
    names = [f.name for f in dataclasses.fields(keys) if f.name != "queue"]
    assert set(names) == {
        "base",
        "ready",
        "delayed",
        "running",
        "failed",
        "dropped",
        "wake",
        "job_prefix",
    }, "a key attribute was added or removed: check it keeps the hash tag"
    all_keys = [getattr(keys, name) for name in names]
    all_keys += [keys.job("0lq3z1y7a0000abcde"), keys.claim_receipt("worker-1")]
    all_keys += [dispatch_marker(keys, "0lq3z1y7a0000abcde"), keys.events, keys.throughput, keys.bad_queue]
    for key in all_keys:
        assert key.startswith(f"{prefix}{{{queue}}}"), key
        assert cluster_hash_tag(key) == queue, key
    assert len(set(all_keys)) == len(all_keys)


def test_queue_keys_of_two_queues_do_not_overlap() -> None:
    a = QueueKeys.of("jobs:", "a")
    ab = QueueKeys.of("jobs:", "ab")
    assert not a.ready.startswith(ab.base)
    assert not ab.ready.startswith(a.base + ":")
    assert cluster_hash_tag(a.ready) != cluster_hash_tag(ab.ready)


@pytest.mark.parametrize("queue", ["", "a:b", "{x}", "a b", "é"])
def test_queue_keys_of_validates_the_queue(queue: str) -> None:
    with pytest.raises(InvalidQueueName):
        QueueKeys.of("jobs:", queue)


def test_queue_keys_are_frozen() -> None:
    keys = QueueKeys.of("jobs:", "payments")
    with pytest.raises(dataclasses.FrozenInstanceError):
        keys.ready = "other"  # type: ignore[misc]


@pytest.mark.parametrize(("minute", "kind"), [(0, "s"), (29_000_000, "f"), (123, "r")])
def test_throughput_fields_read_back_as_written(minute: int, kind: str) -> None:
    field = throughput_field(minute, kind)
    assert field == f"{minute}:{kind}"  # the layout keys.py describes
    assert parse_throughput_field(field.encode()) == (minute, kind)


@pytest.mark.parametrize(
    ("field", "parsed"), [(b"12:x", (12, "f")), (b"12", (12, "f")), (b"x:s", None), (b"\xff:s", None)]
)
def test_throughput_fields_not_written_by_us(field: bytes, parsed: tuple[int, str] | None) -> None:
    assert parse_throughput_field(field) == parsed
