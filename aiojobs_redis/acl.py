"""The least-privilege Redis user for aiojobs-redis: every command it sends, and who sends it.

ACL rules apply to a script's commands as much as to the client's, so the list covers both:
engine.py, admin.py, telemetry_store.py, redis_clock.py, versioning.py and lua/*.lua.
`setuser_line()` gives the ACL SETUSER line the README shows; tests/faults/test_acl_line.py
runs dispatch, a worker with telemetry, the failed-set commands, stats, the dashboard's
reads and the doctor under exactly the README's line and fails on any refused command.
"""

from __future__ import annotations

# command -> what needs it. Client commands first, then those only scripts send.
COMMANDS: dict[str, str] = {
    "ping": "opening the engine; redis-py's health checks",
    "evalsha": "every state transition, and the job events (Lua scripts)",
    "script|load": "loading the scripts (at first use, after a restart, failover or SCRIPT FLUSH)",
    "blpop": "an idle worker waiting for a wake token",
    "sadd": "registering queues",
    "smembers": "listing queues (stats, failed-set commands without --queue, the dashboard)",
    "type": "reading a job; the format version; scripts checking a key's type",
    "hgetall": "reading a job, failed jobs, throughput, a queue's limits (dashboard, limits show)",
    "zrevrange": "listing failed jobs",
    "llen": "stats; a worker's ready counts; scripts",
    "lrange": "reading a job still waiting in a ready list (of any priority level)",
    "zcard": "stats; scripts",
    "zscore": "failed retry/forget by id; scripts",
    "time": "Redis's clock (leases, delays, heartbeats); scripts",
    "exists": "scripts",
    "get": "the format version; the dashboard's worker list; scripts",
    "set": "a worker's heartbeat; scripts",
    "del": "removing a stopped worker's heartbeat; scripts",
    "rename": "scripts: moving a malformed record aside",
    "pexpire": "scripts",
    "persist": "scripts",
    "hget": "a worker writing its queues' declared limits; scripts",
    "hexists": "stats and the dashboard: whether a queue is paused",
    "hmget": "the running jobs list; scripts",
    "hset": "scripts",
    "hdel": "trimming throughput history; scripts",
    "hincrby": "scripts: attempts, throughput counts",
    "lpop": "scripts",
    "lpush": "scripts",
    "rpush": "scripts",
    "zadd": "a worker's heartbeat; scripts",
    "zrem": "removing a stopped worker's heartbeat; scripts",
    "zrange": "the running jobs list; the priority levels a queue has (stats, listing); scripts",
    "zrangebyscore": "the dashboard's worker list; scripts",
    "zremrangebyscore": "a worker's heartbeat drops workers long gone; scripts (abort marks)",
    "zmscore": "a worker running jobs looking for aborted ones (once a second per queue)",
    "lrem": "scripts: abort takes a waiting job out of its ready list",
    "lpos": "scripts: depends_on finds a prerequisite still waiting in a ready list",
    "lset": "scripts: depends_on gives that prerequisite a record, keeping its place",
    "xadd": "the job events script (telemetry, on by default)",
    "xrevrange": "the dashboard's recent events",
}

# Only when the deployment uses what needs them.
OPTIONAL: dict[str, str] = {
    "select": "REDIS_JOB_DB (or the URL's database) other than 0",
    "wait": "durable dispatch (durable=True)",
    "info": "the doctor's server checks (version, persistence, replicas)",
}


def setuser_line(user: str = "jobs", prefix: str = "jobs:", password: str = "PASSWORD") -> str:
    """ACL SETUSER for a user that may run aiojobs-redis under `prefix`, and nothing more."""
    commands = " ".join(f"+{command}" for command in COMMANDS)
    return f"ACL SETUSER {user} on >{password} resetkeys ~{prefix}* resetchannels -@all {commands}"
