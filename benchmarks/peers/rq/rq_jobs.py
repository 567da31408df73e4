"""RQ's job function lives in a module of its own: RQ stores the function's import path."""

import benchlib


def bench_job(payload):
    benchlib.record_sync(payload)
