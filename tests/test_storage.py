"""Storage against real databases: SQLite files and a throwaway PostgreSQL cluster (tests/conftest.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from assay.c2 import AgentSettings, Instruction
from assay.content import Ability, Adversary, Executor, Privilege, Safety
from assay.emulation import Agent, AtomicPlanner, LinkStatus, Operation, OperationState, Result, SkipReason
from assay.errors import StorageError
from assay.events import Alert, Event, Suppression, entity_id
from assay.storage import C2Records, Store, normalize_url
from assay.storage._schema import Base


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'assay.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store.open(url)
    yield s
    s.close()


ABILITIES = {
    "a": Ability(
        "a",
        "A",
        "discovery",
        "T1082",
        "System Information Discovery",
        (Executor("sh", "linux", "uname -a", ("rm -rf /tmp/x-#{paw}",)),),
        safety=Safety.SAFE,
    ),
    "b": Ability(
        "b",
        "B",
        "discovery",
        "T1033",
        "System Owner/User Discovery",
        (Executor("sh", "linux", "id"),),
        privilege=Privilege.ELEVATED,
        safety=Safety.SAFE,
    ),
}


def _run_operation(store: Store) -> Operation:
    """Drive an operation the way the C2 core does, persisting after every step."""
    op = Operation(
        id="op1",
        name="first",
        adversary=Adversary("adv", "adv", ("a", "b")),
        planner=AtomicPlanner(),
        abilities=ABILITIES,
        group="red",
        created_at=100.0,
    )
    agent = Agent("paw1", host="h1", executors=("sh", "bash"), created_at=99.0, last_seen=99.0)
    store.save_agent(agent, key_digest="d" * 64)
    op.add_agent(agent)
    counter = itertools.count(1)
    new_id = lambda: f"L{next(counter)}"  # noqa: E731
    store.save_operation(op, op.advance(101.0, new_id))
    first = op.links[0]
    op.mark_delivered(first, 101.5)
    store.save_links([first])
    assert store.link("L1") is not None and store.link("L1").delegated_at == 101.5  # type: ignore[union-attr]
    result = Result(
        "L1", LinkStatus.SUCCESS, 0, "Linux\n", "", pid=4242, start_ticks=987654321, started_at=101.6
    )
    changed = op.on_result(result, 102.0)
    assert changed is not None
    store.save_result(result, "paw1", 102.0, accepted=True)
    store.save_operation(op, [changed.link, *op.advance(102.0, new_id)])
    cleanup = op.links[-1]
    op.mark_delivered(cleanup, 102.1)
    op.on_result(Result(cleanup.id, LinkStatus.SUCCESS, 0, pid=4300, start_ticks=987654400), 103.0)
    store.save_operation(op, [cleanup, *op.advance(103.0, new_id)])
    return op


def test_operation_links_and_results_are_stored_as_they_change(store: Store) -> None:
    op = _run_operation(store)
    assert op.state is OperationState.FINISHED
    record = store.operation("op1")
    assert record is not None
    assert (record.state, record.adversary_id, record.planner_id, record.agents) == (
        OperationState.FINISHED,
        "adv",
        "atomic",
        ("paw1",),
    )
    assert record.finished_at == 103.0
    links = store.links("op1")
    assert [(lk.ability_id, lk.status, lk.cleanup) for lk in links] == [
        ("a", LinkStatus.SUCCESS, False),
        ("b", LinkStatus.DISCARD, False),
        ("a", LinkStatus.SUCCESS, True),
    ]
    first = links[0]
    assert (first.pid, first.start_ticks, first.entity_id) == (4242, 987654321, "4242:987654321")
    assert (first.planned_at, first.delegated_at, first.started_at, first.finished_at) == (
        101.0,
        101.5,
        101.6,
        102.0,
    )
    assert (first.exit_code, first.stdout, first.technique_id, first.tactic, first.host) == (
        0,
        "Linux\n",
        "T1082",
        "discovery",
        "h1",
    )
    skipped = links[1]
    assert skipped.skip_reason_id is SkipReason.PRIVILEGE and "Elevated" in (skipped.skip_reason or "")
    assert links[2].command == "rm -rf /tmp/x-paw1" and links[2].cleanup_of == "L1"
    assert store.results("L1")[0]["pid"] == 4242
    agent = store.agent("paw1")
    assert agent is not None and agent.executors == ("sh", "bash") and agent.privilege is Privilege.USER
    assert store.agent_key_digest("paw1") == "d" * 64
    store.save_agent(agent)  # saving without a key keeps the stored one
    assert store.agent_key_digest("paw1") == "d" * 64
    assert [r.id for r in store.operations(states=[OperationState.RUNNING])] == []


def _event(ts: float, pid: int, action: str = "exec") -> Event:
    return Event.of(
        action,
        "ebpf",
        ts,
        host="h1",
        values={
            "process.pid": pid,
            "process.entity_id": entity_id(pid, 7),
            "process.args": ["sh", "/dev/fd/3"],
        },
    )


def test_telemetry_is_indexed_queryable_and_alerts_are_not_stored_twice(store: Store) -> None:
    _run_operation(store)
    events = [_event(101.7, 4242), _event(101.8, 4243, "connect"), _event(500.0, 1)]
    alert = Alert.for_events(
        rule_id="r1",
        title="t",
        level="high",
        techniques=("T1082",),
        events=events[:1],
        suppressed_by=Suppression("allow-1", "known admin script"),
    )
    assert store.add_telemetry(events, [alert]) == (3, 1)
    assert store.add_telemetry([], [alert]) == (0, 0)
    assert len(store.alerts()) == 1
    found, alerts = store.telemetry_for_operation("op1", margin=1.0)
    assert [e.pid for e in found] == [4242, 4243]
    assert found[0].fields["process.args"] == ["sh", "/dev/fd/3"]
    assert alerts[0].suppressed_by == Suppression("allow-1", "known admin script")
    assert alerts[0].lineage == ("4242:7",)
    assert [e.pid for e in store.events(action="connect")] == [4243]
    assert [e.pid for e in store.events(entity_ids=["1:7"])] == [1]
    assert store.alerts(suppressed=False) == []


def test_migrated_schema_matches_the_models_and_migrating_again_is_a_no_op(store: Store) -> None:
    head = store.db.head()
    assert head and store.db.migrate() == head
    with store.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_database_errors_are_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot use database nosuchdb://x"):
        Store.open("nosuchdb://x")
    with pytest.raises(StorageError, match="not a database URL"):
        Store.open("sqlite://:bad:port/x")
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("rel/assay.db").startswith("sqlite:////")


def test_an_agent_its_settings_and_its_deadman_tasks_are_stored_all_or_none(store: Store) -> None:
    records = C2Records(store.db)
    task = Instruction("deadman-1", "", "sh", "echo a", timeout=60, cleanup=False, deadman=True)
    settings = AgentSettings(5, 9, 30, profile={"deadman_enabled": True})
    records.register_agent(Agent("one", host="h"), "digest-one", settings, [("a", task)], 1.0)
    assert [a.paw for a in store.agents()] == ["one"] and store.agent_key_digest("one") == "digest-one"
    assert records.settings() == {"one": settings}
    assert records.open_tasks() == [("one", task, False)]

    # The task row fails (its id is taken) after the agent and settings rows went in: none of them stays.
    with pytest.raises(StorageError, match="agent registration failed"):
        records.register_agent(Agent("two", host="h2"), None, settings, [("a", task)], 2.0)
    assert [a.paw for a in store.agents()] == ["one"] and set(records.settings()) == {"one"}
    assert records.open_tasks() == [("one", task, False)]

    records.register_agent(Agent("one", host="moved"), None, None, [], 3.0)  # no key given: kept
    assert store.agent_key_digest("one") == "digest-one" and store.agents()[0].host == "moved"
