"""Plain values for the emulation tests: abilities, an operation factory, and a harness that drives an
operation the way the service does (advance, deliver, report), with a counter for ids and a hand clock."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from assay.content import Ability, Adversary, Executor, ParserConfig, Privilege, Requirement, Safety
from assay.emulation import Agent, Link, LinkStatus, Operation, Planner, Result, planner


def ability(
    aid: str,
    *,
    executor: str = "sh",
    platform: str = "linux",
    command: str | None = None,
    cleanup: tuple[str, ...] = (),
    privilege: Privilege | None = None,
    tactic: str = "discovery",
    technique: str = "T1082",
    parsers: tuple[ParserConfig, ...] = (),
    requirements: tuple[Requirement, ...] = (),
    safety: Safety | None = Safety.SAFE,
    repeatable: bool = False,
    singleton: bool = False,
    timeout: int = 60,
) -> Ability:
    return Ability(
        id=aid,
        name=f"ability {aid}",
        tactic=tactic,
        technique_id=technique,
        technique_name="",
        executors=(
            Executor(
                executor,
                platform,
                command or f"echo {aid} #{{paw}}",
                cleanup,
                timeout=timeout,
                parsers=parsers,
            ),
        ),
        privilege=privilege,
        requirements=requirements,
        safety=safety,
        repeatable=repeatable,
        singleton=singleton,
        buckets=(tactic,),
    )


def operation(
    order: tuple[str, ...],
    abilities: Mapping[str, Ability],
    *,
    planner_name: str = "atomic",
    auto_close: bool = True,
    **kwargs: object,
) -> Operation:
    chosen: Planner = planner(planner_name)
    return Operation(
        id="op",
        name="op",
        adversary=Adversary(id="adv", name="adv", atomic_ordering=order),
        planner=chosen,
        abilities=abilities,
        group="red",
        auto_close=auto_close,
        **kwargs,  # type: ignore[arg-type]
    )


class Harness:
    """Drives an operation as the service would: advance, deliver, report; time moves one second a step."""

    def __init__(self, op: Operation, now: float = 1000.0) -> None:
        self.op = op
        self.now = now
        counter = itertools.count(1)
        self.new_id = lambda: f"L{next(counter)}"

    def advance(self) -> list[str]:
        self.now += 1
        return [lk.id for lk in self.op.advance(self.now, self.new_id)]

    def deliver(self, paw: str = "p1") -> list[Link]:
        links = self.op.undelivered(paw, self.now)
        for link in links:
            self.op.mark_delivered(link, self.now)
        return links

    def report(
        self, link_id: str, status: LinkStatus = LinkStatus.SUCCESS, stdout: str = "", exit_code: int = 0
    ) -> list[str]:
        self.now += 1
        self.op.on_result(
            Result(
                link_id,
                status,
                exit_code=exit_code,
                stdout=stdout,
                pid=42,
                start_ticks=7,
                started_at=self.now,
            ),
            self.now,
        )
        return self.advance()

    def run_all(self, paw: str = "p1", outputs: Mapping[str, str] | None = None) -> list[Link]:
        """Deliver and succeed every link until the operation is done; returns the links it ran."""
        ran: list[Link] = []
        if not self.op.links:
            self.advance()
        for _ in range(200):
            if self.op.done:
                return ran
            links = self.deliver(paw)
            if not links:
                raise AssertionError(
                    f"stuck in {self.op.state}: {[(lk.id, lk.status) for lk in self.op.links]}"
                )
            for link in links:
                ran.append(link)
                self.report(link.id, stdout=(outputs or {}).get(link.ability_id, ""))
        raise AssertionError("did not finish")


def agent(paw: str = "p1", **kwargs: object) -> Agent:
    return Agent(paw, **kwargs)  # type: ignore[arg-type]
