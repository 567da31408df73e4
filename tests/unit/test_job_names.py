"""Job names: the qualname by default (not the import path), declared aliases, 0.1's names kept
as implicit aliases, duplicates refused where they are defined, and handle() checked early."""

from __future__ import annotations

import functools
import importlib.util
import sys
import textwrap
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aiojobs_redis import (
    AiojobsRedisError,
    DuplicateJobName,
    InvalidJobClass,
    Job,
    SyncEngine,
    UnknownJob,
    registry,
    use_engine,
)


@pytest.fixture(autouse=True)
def own_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from the registry as it was, and leaves it so."""
    monkeypatch.setattr(registry, "_jobs", dict(registry._jobs))
    monkeypatch.setattr(registry, "_weak", set(registry._weak))
    yield


def load(path: Path, module: str) -> ModuleType:
    """Import the file at `path` as module `module` (as `--import` or `python -m` would)."""
    spec = importlib.util.spec_from_file_location(module, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        del sys.modules[module]
        raise
    return loaded


def write(path: Path, source: str) -> Path:
    path.write_text("from aiojobs_redis import Job\n\n" + textwrap.dedent(source))
    return path


JOB_FILE = """
class ProcessPaymentN(Job):
    queue = "payments"

    async def handle(self) -> None:
        return None
"""


# -- the default name and 0.1's names -------------------------------------------------------


def test_the_default_name_does_not_depend_on_the_import_path(tmp_path: Path) -> None:
    path = write(tmp_path / "payjobs_n.py", JOB_FILE)
    first = load(path, "payjobs_n")
    second = load(path, "app_n.payjobs_n")  # the same file, imported under another name
    assert first.ProcessPaymentN.name == second.ProcessPaymentN.name == "ProcessPaymentN"
    # The same class from the same file, again: no duplicate; the newer one answers.
    assert registry.lookup("ProcessPaymentN") is second.ProcessPaymentN
    # 0.1 stored "module.QualName": jobs stored under either import path still run.
    assert registry.lookup("payjobs_n.ProcessPaymentN") is first.ProcessPaymentN
    assert registry.lookup("app_n.payjobs_n.ProcessPaymentN") is second.ProcessPaymentN
    # Listed once, as the class that answers to its name.
    assert [cls for cls in registry.classes() if cls.name == "ProcessPaymentN"] == [second.ProcessPaymentN]


def test_a_class_defined_in_a_script_gets_its_plain_name_and_no_main_alias(tmp_path: Path) -> None:
    path = write(tmp_path / "mainjob_n.py", JOB_FILE)
    main = sys.modules["__main__"]
    try:
        as_script = load(path, "__main__")  # python mainjob_n.py
        assert as_script.ProcessPaymentN.name == "ProcessPaymentN"
        with pytest.raises(UnknownJob):
            registry.lookup("__main__.ProcessPaymentN")
        imported = load(path, "mainjob_n")  # and the worker's --import mainjob_n: the same class
    finally:
        sys.modules["__main__"] = main
    assert registry.lookup("ProcessPaymentN") is imported.ProcessPaymentN


def test_an_implicit_alias_gives_way_to_an_explicit_name_without_error() -> None:
    old = type("ChargeAliasN", (Job,), {"__module__": "billing_n", "handle": _async_handle})
    assert registry.lookup("billing_n.ChargeAliasN") is old
    new = type("ChargeAliasNV2", (Job,), {"name": "billing_n.ChargeAliasN", "handle": _async_handle})
    assert registry.lookup("billing_n.ChargeAliasN") is new
    type("ChargeAliasN", (Job,), {"__module__": "billing_n", "handle": _async_handle})  # again: still new
    assert registry.lookup("billing_n.ChargeAliasN") is new


# -- duplicates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ['name = "NotifyN"', ""],
    ids=["explicit-name", "default-name"],
)
def test_two_classes_claiming_one_name_is_an_error_naming_both(tmp_path: Path, body: str) -> None:
    source = f"""
    class NotifyN(Job):
        {body}

        async def handle(self) -> None:
            return None
    """
    (tmp_path / "billing_n").mkdir()
    (tmp_path / "shipping_n").mkdir()
    billing = load(write(tmp_path / "billing_n" / "jobs.py", source), "billing_n.jobs")
    with pytest.raises(DuplicateJobName) as info:
        load(write(tmp_path / "shipping_n" / "jobs.py", source), "shipping_n.jobs")
    message = str(info.value)
    assert "'NotifyN'" in message
    assert "billing_n.jobs.NotifyN" in message and str(tmp_path / "billing_n" / "jobs.py") in message
    assert "shipping_n.jobs.NotifyN" in message and str(tmp_path / "shipping_n" / "jobs.py") in message
    assert 'name = "..."' in message
    assert isinstance(info.value, AiojobsRedisError)
    assert registry.lookup("NotifyN") is billing.NotifyN  # the first keeps it
    with pytest.raises(UnknownJob):
        registry.lookup("shipping_n.jobs.NotifyN")  # the refused class registered nothing


def test_a_class_defined_again_in_the_same_place_replaces_the_old_one() -> None:
    classes = [_define_in_a_function() for _ in range(2)]  # a test run twice, say
    assert classes[0] is not classes[1]
    assert registry.lookup(classes[0].name) is classes[1]


def _define_in_a_function() -> type[Job]:
    class Again(Job):
        aliases = ("AgainOldN",)

        async def handle(self) -> None:
            return None

    return Again


def test_abstract_bases_without_handle_never_collide(tmp_path: Path) -> None:
    source = """
    class BaseJobN(Job):
        queue = "base"
    """
    (tmp_path / "a_n").mkdir()
    (tmp_path / "b_n").mkdir()
    load(write(tmp_path / "a_n" / "jobs.py", source), "a_n.jobs")
    b = load(write(tmp_path / "b_n" / "jobs.py", source), "b_n.jobs")
    assert registry.lookup("BaseJobN") is b.BaseJobN

    class BaseJobN(Job):  # a concrete class takes the name over
        async def handle(self) -> None:
            return None

    assert BaseJobN.name == "test_abstract_bases_without_handle_never_collide.<locals>.BaseJobN"
    concrete = type("BaseJobN", (Job,), {"handle": _async_handle})
    assert registry.lookup("BaseJobN") is concrete


# -- declared aliases -----------------------------------------------------------------------


def test_aliases_find_the_class_under_its_old_names() -> None:
    class Renamed(Job):
        name = "RenamedN"
        aliases = ("OldNameN", "old.module.OldNameN")

        async def handle(self) -> None:
            return None

    assert registry.lookup("OldNameN") is Renamed
    assert registry.lookup("old.module.OldNameN") is Renamed
    assert Renamed.aliases == ("OldNameN", "old.module.OldNameN")

    class Child(Renamed):  # aliases are not inherited: the child is another job
        name = "RenamedChildN"

    assert len(Child.aliases) == 0
    assert registry.lookup("OldNameN") is Renamed


def test_an_alias_claimed_twice_or_equal_to_another_name_is_a_duplicate() -> None:
    type("HolderN", (Job,), {"name": "HolderN", "aliases": ("SharedN",), "handle": _async_handle})
    with pytest.raises(DuplicateJobName, match=r"'SharedN'.*drop the alias"):
        type("OtherN", (Job,), {"aliases": ("SharedN",), "handle": _async_handle})
    with pytest.raises(DuplicateJobName, match="'SharedN'"):
        type("SharedN", (Job,), {"handle": _async_handle})
    with pytest.raises(DuplicateJobName, match="'HolderN'"):
        type("Third", (Job,), {"aliases": ("HolderN",), "handle": _async_handle})


@pytest.mark.parametrize("aliases", ["OldNameN", ("has space",), ("1digit",), (5,), None])
def test_invalid_aliases_are_refused(aliases: object) -> None:
    with pytest.raises(AiojobsRedisError, match="alias"):
        type("BadAliases", (Job,), {"aliases": aliases, "handle": _async_handle})


# -- unknown names --------------------------------------------------------------------------


def test_an_unknown_name_lists_the_known_ones_and_hints_at_name() -> None:
    registry._jobs.clear()
    for n in range(25):
        type(f"Known{n:02d}", (Job,), {"handle": _async_handle})
    with pytest.raises(UnknownJob) as info:
        registry.lookup("__main__.SendEmail")
    message = str(info.value)
    assert "'__main__.SendEmail'" in message
    shown = ", ".join(f"Known{n:02d}" for n in range(20))
    assert f"known: {shown} and 5 more" in message
    assert "Known20" not in message
    assert "`name = ...`" in message


def test_an_unknown_name_says_when_nothing_is_known() -> None:
    registry._jobs.clear()
    with pytest.raises(UnknownJob, match="knows no job names"):
        registry.lookup("SendEmail")


# -- handle() must be a coroutine function --------------------------------------------------


def test_a_plain_def_handle_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(InvalidJobClass, match=r"Charge.handle .*async def handle\(self\)") as info:

        class Charge(Job):
            def handle(self) -> None:  # type: ignore[override]
                raise AssertionError("never called")

    assert isinstance(info.value, TypeError)


def test_a_generator_handle_is_refused() -> None:
    async def agen(self: Job) -> Any:
        yield 1

    def gen(self: Job) -> Any:
        yield 1

    for handle in (agen, gen):
        with pytest.raises(InvalidJobClass, match="generator"):
            type("Yields", (Job,), {"handle": handle})


def test_handle_may_be_inherited_or_wrapped_by_a_decorator() -> None:
    def logged(func: Any) -> Any:
        @functools.wraps(func)
        def wrapper(self: Job) -> Coroutine[Any, Any, None]:
            return func(self)  # type: ignore[no-any-return]

        return wrapper

    class Decorated(Job):
        @logged
        async def handle(self) -> None:
            return None

    class Base(Job):  # no handle: an abstract base
        queue = "bases"

    class Concrete(Base):
        handle = Decorated.handle

    assert registry.lookup(Concrete.name) is Concrete


async def _async_handle(self: Job) -> None:
    return None


# -- dispatch on the class ------------------------------------------------------------------


class Pay(Job):
    name = "job_names.Pay"
    attempts = 2
    seen: list[tuple[Any, int]] = []  # noqa: RUF012

    async def handle(self) -> None:
        Pay.seen.append((self.payload, self.attempt))


@pytest.mark.anyio
async def test_dispatch_on_the_class_dispatches_a_new_job_under_the_sync_engine() -> None:
    Pay.seen = []
    engine = SyncEngine()
    with use_engine(engine):
        job_id = await Pay.dispatch({"order": 1})
        await Pay.dispatch({"order": 2}, delay="+5 seconds", durable=True)
        await Pay().dispatch({"order": 3})
        await Pay({"order": 4}).dispatch()
        await Pay().set_payload({"order": 5}).dispatch(delay=1)
    assert Pay.seen == [({"order": n}, 1) for n in range(1, 6)]
    assert engine.completed[0] == job_id


def test_reading_dispatch_from_a_class_makes_no_job() -> None:
    class NeedsArgs(Job):
        def __init__(self, order: int) -> None:
            super().__init__({"order": order})

        async def handle(self) -> None:
            return None

    assert hasattr(NeedsArgs, "dispatch")  # no instance made just to look
    assert NeedsArgs.dispatch.__doc__ == Job.dispatch.__doc__
    assert "SendEmail.dispatch(payload)" in (Job.dispatch.__doc__ or "")
    assert getattr(Job.dispatch, "__name__", None) == "dispatch"
