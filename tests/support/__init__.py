"""Helpers the tests share: servers, worker processes, faults, ledgers and the jobs they run."""
