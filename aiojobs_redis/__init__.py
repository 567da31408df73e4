"""aiojobs-redis: an asyncio-native job engine backed by Redis."""

from .abort import abort
from .config import Settings
from .connection import connect, open_engine
from .context import current_engine, use_engine
from .engine import RedisEngine
from .engine_base import WorkerEngine
from .errors import (
    AiojobsRedisError,
    BadResult,
    ConfigurationError,
    DependencyFailed,
    DuplicateJob,
    DuplicateJobName,
    EmbeddedServerError,
    EngineError,
    EngineNotConnected,
    EngineUnavailable,
    InvalidDelay,
    InvalidFlow,
    InvalidGroupKey,
    InvalidJobClass,
    InvalidJobId,
    InvalidMiddleware,
    InvalidPayload,
    InvalidPriority,
    InvalidQueueName,
    InvalidSchedule,
    JobAborted,
    JobFailed,
    JobNotFound,
    MalformedJob,
    NotReplicated,
    PayloadError,
    PayloadNotSerializable,
    PayloadTooLarge,
    PermanentFailure,
    RateLimited,
    RedisAuthError,
    RedisTLSError,
    RetryLater,
    UnknownDependency,
    UnknownJob,
)
from .flow import pause, resume
from .hooks import Hooks, JobContext
from .job import Job
from .lifecycle import Observer
from .limits import InvalidLimit, QueueLimits
from .middleware import Middleware
from .records import JobInfo, QueueStats
from .results import JobRef
from .schedules import Cron, Every
from .sharding import ShardedQueue
from .signals import drain_on_signal
from .sync import SyncEngine
from .worker import Worker
from .workflows import Batch, BatchResult, Chain, batch, chain

__all__ = [
    "AiojobsRedisError",
    "BadResult",
    "Batch",
    "BatchResult",
    "Chain",
    "ConfigurationError",
    "Cron",
    "DependencyFailed",
    "DuplicateJob",
    "DuplicateJobName",
    "EmbeddedServerError",
    "EngineError",
    "EngineNotConnected",
    "EngineUnavailable",
    "Every",
    "Hooks",
    "InvalidDelay",
    "InvalidFlow",
    "InvalidGroupKey",
    "InvalidJobClass",
    "InvalidJobId",
    "InvalidLimit",
    "InvalidMiddleware",
    "InvalidPayload",
    "InvalidPriority",
    "InvalidQueueName",
    "InvalidSchedule",
    "Job",
    "JobAborted",
    "JobContext",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobRef",
    "MalformedJob",
    "Middleware",
    "NotReplicated",
    "Observer",
    "PayloadError",
    "PayloadNotSerializable",
    "PayloadTooLarge",
    "PermanentFailure",
    "QueueLimits",
    "QueueStats",
    "RateLimited",
    "RedisAuthError",
    "RedisEngine",
    "RedisTLSError",
    "RetryLater",
    "Settings",
    "ShardedQueue",
    "SyncEngine",
    "UnknownDependency",
    "UnknownJob",
    "Worker",
    "WorkerEngine",
    "abort",
    "batch",
    "chain",
    "connect",
    "current_engine",
    "drain_on_signal",
    "open_engine",
    "pause",
    "resume",
    "use_engine",
]
