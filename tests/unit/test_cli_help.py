"""The command line's help and argument errors, read from the parser itself (no Redis)."""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Iterator

import pytest

from aiojobs_redis import cli
from aiojobs_redis.errors import AiojobsRedisError
from aiojobs_redis.keys import FORMAT_VERSION


def parsers(
    parser: argparse.ArgumentParser, path: str = "aiojobs-redis"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser and every subcommand's, with the command line that reaches it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{path} {name}")


def options() -> Iterator[tuple[str, argparse.Action]]:
    for path, parser in parsers(cli.build_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                yield f"{path} {'/'.join(action.option_strings) or action.dest}", action


def test_every_option_of_every_command_says_what_it_means_and_its_default() -> None:
    seen = 0
    for where, action in options():
        seen += 1
        assert action.help and action.help.strip(), f"{where} has no help"
        flag = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
        if action.option_strings and not flag and action.default not in (None, argparse.SUPPRESS):
            assert "default" in action.help, f"{where}: its help does not give its default"
    assert seen > 40  # the walk reached the subcommands


def test_the_description_is_for_users_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "the only place that parses argv" not in out
    assert "Run workers for aiojobs-redis jobs" in out
    assert "examples:" in out and "aiojobs-redis work --import app.jobs" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    version = importlib.metadata.version("aiojobs-redis")
    assert capsys.readouterr().out == f"aiojobs-redis {version} (data format version {FORMAT_VERSION})\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["work", "--concurrency", "abc"], "argument --concurrency: expected a whole number >= 1, not 'abc'"),
        (["work", "--concurrency", "0"], "argument --concurrency: expected a whole number >= 1, not '0'"),
        (["work", "--max-stalls", "-1"], "argument --max-stalls: expected a whole number >= 0, not '-1'"),
        (["work", "--lease", "soon"], "argument --lease: expected a number of seconds > 0, not 'soon'"),
        (["work", "--grace", "-1"], "argument --grace: expected a number of seconds >= 0, not '-1'"),
        (["work", "--max-time", "nan"], "argument --max-time: expected a number of seconds > 0, not 'nan'"),
        (["dashboard", "--port", "http"], "argument --port: expected a whole number >= 1, not 'http'"),
        (["failed", "list", "--limit", "1.5"], "argument --limit: expected a whole number >= 1, not '1.5'"),
    ],
)
def test_a_bad_number_is_named_in_words(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "invalid" not in err and "_int" not in err and "_float" not in err, err


def test_doctor_help_gives_its_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["doctor", "--help"])
    out = capsys.readouterr().out
    assert "exit status:" in out
    assert "0  no ERROR found" in out and "1  an ERROR was found" in out


def test_work_help_gives_the_queue_default_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["work", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "default: the queues of the imported Job classes" in out
    assert "130 or 143 when a second SIGINT or SIGTERM stopped it at once" in out


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ("payjobs.py", "--import payjobs"),
        ("app/payjobs.py", "--import app.payjobs"),
        ("./app/jobs", "--import app.jobs"),
    ],
)
def test_a_file_given_to_import_gets_the_module_name_to_give(given: str, hint: str) -> None:
    with pytest.raises(AiojobsRedisError) as error:
        cli._import_job_modules([given])
    assert f"give a module name, e.g. {hint}" in str(error.value)
    assert str(error.value).startswith(f"cannot import {given!r}: ")


def test_a_missing_module_gets_no_file_hint() -> None:
    with pytest.raises(AiojobsRedisError) as error:
        cli._import_job_modules(["no_such_module_here"])
    assert "give a module name" not in str(error.value)


def test_a_bad_middleware_stops_the_worker_command_before_it_connects(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")  # nothing answers there: never reached
    assert cli.main(["work", "--middleware", "json:__name__"]) == 1
    err = capsys.readouterr().err
    assert "aiojobs-redis: error: --middleware json:__name__: 'json' is not callable" in err
    assert "waiting for Redis" not in err
