"""aiojobs-redis: an asyncio-native job engine backed by Redis."""

from .config import Settings
from .connection import connect, open_engine
from .context import current_engine, use_engine
from .engine import RedisEngine
from .errors import (
    AiojobsRedisError,
    ConfigurationError,
    EngineError,
    EngineNotConnected,
    EngineUnavailable,
    InvalidDelay,
    InvalidJobId,
    InvalidQueueName,
    MalformedJob,
    NotReplicated,
    PayloadError,
    PayloadNotSerializable,
    PayloadTooLarge,
    PermanentFailure,
    RetryLater,
    UnknownJob,
)
from .hooks import Hooks
from .job import Job
from .records import JobInfo, QueueStats
from .sync import SyncEngine
from .worker import Worker

__all__ = [
    "AiojobsRedisError",
    "ConfigurationError",
    "EngineError",
    "EngineNotConnected",
    "EngineUnavailable",
    "Hooks",
    "InvalidDelay",
    "InvalidJobId",
    "InvalidQueueName",
    "Job",
    "JobInfo",
    "MalformedJob",
    "NotReplicated",
    "PayloadError",
    "PayloadNotSerializable",
    "PayloadTooLarge",
    "PermanentFailure",
    "QueueStats",
    "RedisEngine",
    "RetryLater",
    "Settings",
    "SyncEngine",
    "UnknownJob",
    "Worker",
    "connect",
    "current_engine",
    "open_engine",
    "use_engine",
]
