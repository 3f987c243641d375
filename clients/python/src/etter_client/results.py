"""What the clients return: :class:`RunState` and plain dataclasses over the server's messages.

:class:`~etter_client.PipelineClient` and :class:`~etter_client.aio.AsyncPipelineClient` both build
their results with the functions here, so a run looks the same whichever client fetched it. Each
result keeps the message it came from as ``proto``, for the fields it does not copy.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from etter_client._gen.etter.pipeline.v1 import pipeline_service_pb2 as pb
from etter_client._gen.etter.pipeline.v1 import resources_pb2 as res

__all__ = [
    "BatchProgress",
    "BatchQuote",
    "BatchQuoteItem",
    "BatchResult",
    "Comparison",
    "Quote",
    "Run",
    "RunState",
    "StepComparison",
    "Usage",
    "WatchEvent",
    "to_dataframe",
]

_ROLE_STATUS_PREFIX = "ROLE_STATUS_"


class RunState(str, Enum):
    """A run's lifecycle state: the contract's ``RoleStatus`` without its ``ROLE_STATUS_`` prefix.

    Members are also strings equal to their name (``RunState.READY == "READY"``) and print as
    their name, so code written when statuses were plain strings (comparisons, sets of names,
    f-strings, pandas filters) keeps working. :meth:`parse` turns a name into a member.
    """

    #: Not set; also what a state unknown to this client (added by a newer server) reads as.
    UNSPECIFIED = "UNSPECIFIED"
    DRAFT = "DRAFT"
    #: Accepted; its documents are being checked before it is queued (large batches on S3).
    VALIDATING = "VALIDATING"
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    READY = "READY"
    DEGRADED = "DEGRADED"
    FAILED = "FAILED"
    STALE = "STALE"
    CANCELLED = "CANCELLED"
    VALIDATION_ERROR = "VALIDATION_ERROR"

    def __str__(self) -> str:
        return self.value

    def __format__(self, format_spec: str) -> str:
        return format(self.value, format_spec)

    @classmethod
    def from_proto(cls, value: res.RoleStatus.ValueType) -> RunState:
        """The member of a ``RoleStatus`` value; :attr:`UNSPECIFIED` for a value this client does
        not know, so a newer server's state does not break reading a run."""
        try:
            return cls(res.RoleStatus.Name(value).removeprefix(_ROLE_STATUS_PREFIX))
        except ValueError:
            return cls.UNSPECIFIED

    def to_proto(self) -> res.RoleStatus.ValueType:
        """The ``RoleStatus`` value of this state, as requests carry it."""
        return res.RoleStatus.Value(_ROLE_STATUS_PREFIX + self.value)

    @classmethod
    def parse(cls, value: RunState | str) -> RunState:
        """A member from itself or from its name in any case, with or without the proto prefix
        (``"ready"``, ``"READY"``, ``"ROLE_STATUS_READY"``); ``ValueError`` for anything else."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value.strip().upper().removeprefix(_ROLE_STATUS_PREFIX))
        except ValueError:
            names = ", ".join(member.value for member in cls)
            raise ValueError(f"unknown run state {value!r}: one of {names}") from None

    @property
    def final(self) -> bool:
        """Whether a run in this state has ended (it will not change unless retried)."""
        return self in _FINAL


_FINAL = frozenset(
    {RunState.READY, RunState.DEGRADED, RunState.FAILED, RunState.CANCELLED, RunState.VALIDATION_ERROR, RunState.STALE}
)


def _time(ts: Timestamp | None) -> _dt.datetime | None:
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=_dt.timezone.utc)


def _enum_name(name_of: Callable[[Any], str], value: int, prefix: str, unset: str = "") -> str:
    """An enum value's name without its prefix (``"NO_WORKER"``); ``unset`` for 0 and for a value
    this client does not know (added by a newer server), so reading a message never fails on it."""
    if value == 0:
        return unset
    try:
        return name_of(value).removeprefix(prefix)
    except ValueError:
        return unset


def _wait_reason(value: res.WaitReason.ValueType) -> str:
    """A ``WaitReason`` without its prefix; ``""`` when not waiting."""
    return _enum_name(res.WaitReason.Name, value, "WAIT_REASON_")


def _outcome(value: pb.BatchItemOutcome.ValueType) -> str:
    """A ``BatchItemOutcome`` without its prefix (``"ACCEPTED"``); ``"UNSPECIFIED"`` when unknown."""
    return _enum_name(pb.BatchItemOutcome.Name, value, "BATCH_ITEM_OUTCOME_", "UNSPECIFIED")


# What a planned step's state means for the push: the step runs, its output comes from the run
# that answers, or it is not part of the run.
_PLANNED = {res.STEP_STATE_PENDING: "run", res.STEP_STATE_REUSED: "reuse", res.STEP_STATE_SKIPPED: "skip"}


def _plan(steps: Iterable[res.PlannedStep]) -> dict[str, str]:
    """A push's plan as step name → ``"run"``, ``"reuse"`` or ``"skip"``, in plan order (another
    step state, which a plan does not carry today, reads as its lowercase name)."""
    plan: dict[str, str] = {}
    for step in steps:
        what = _PLANNED.get(step.state)
        plan[step.name] = what or _enum_name(res.StepState.Name, step.state, "STEP_STATE_", "UNSPECIFIED").lower()
    return plan


def _steps(plan: dict[str, str]) -> str:
    """A plan in a few words: ``4 run, 7 skip``."""
    return ", ".join(f"{n} {what}" for what, n in Counter(plan.values()).items()) or "no steps"


def _cost(tokens: int, cost_micros: int, currency: str) -> str:
    """Tokens and, when the server prices them, the cost: ``12000 tokens (0.0840 USD)``."""
    return f"{tokens} tokens" + (f" ({cost_micros / 1_000_000:.4f} {currency})" if currency else "")


@dataclass
class Run:
    """One run of a role, as the server reported it (the full message is :attr:`proto`)."""

    workflow_id: str
    role_id: str
    role_name: str
    company_id: str
    status: RunState
    current_step: str
    steps_done: int
    steps_total: int
    position_in_queue: int
    estimated_seconds: int
    tokens_estimated: int
    tokens_used: int
    needs_review: bool
    error: str
    trace_id: str
    create_time: _dt.datetime | None
    end_time: _dt.datetime | None
    proto: res.RunStatus = field(repr=False)
    #: What the run waits for (``"NO_WORKER"``, ``"COMPANY_CAP"``, …); ``""`` while a step runs
    #: and once it ended.
    wait_reason: str = ""

    @classmethod
    def from_proto(cls, run: res.RunStatus) -> Run:
        return cls(
            workflow_id=run.workflow_id,
            role_id=run.role_id,
            role_name=run.role_name,
            company_id=run.company_id,
            status=RunState.from_proto(run.status),
            current_step=run.current_step,
            steps_done=run.progress.current,
            steps_total=run.progress.total,
            position_in_queue=run.position_in_queue,
            estimated_seconds=run.estimated_duration_seconds,
            tokens_estimated=run.token_estimate.total_tokens,
            tokens_used=run.tokens_used.total_tokens,
            needs_review=run.needs_review,
            error=f"{run.error.code}: {run.error.message}" if run.error.code else "",
            trace_id=run.trace_id,
            create_time=_time(run.create_time),
            end_time=_time(run.end_time),
            proto=run,
            wait_reason=_wait_reason(run.wait_reason),
        )

    @property
    def final(self) -> bool:
        """Whether the run has ended."""
        return self.status.final

    def __str__(self) -> str:
        where = f"step {self.current_step}" if self.current_step else f"{self.steps_done}/{self.steps_total} steps"
        return f"{self.role_name} [{self.status}] {where} ({self.workflow_id})"


@dataclass
class BatchResult:
    """What PushBatch answered: one result per item, and the batch's progress."""

    batch_id: str
    created: bool
    accepted: int
    rejected: int
    duplicates: int
    existing: int
    tokens_estimated: int
    items: list[pb.PushBatchItemResult] = field(repr=False)
    proto: pb.PushBatchResponse = field(repr=False)

    @classmethod
    def from_proto(cls, answer: pb.PushBatchResponse) -> BatchResult:
        def count(outcome: pb.BatchItemOutcome.ValueType) -> int:
            return sum(1 for item in answer.items if item.outcome == outcome)

        return cls(
            batch_id=answer.batch_id,
            created=answer.created,
            accepted=count(pb.BATCH_ITEM_OUTCOME_ACCEPTED),
            rejected=count(pb.BATCH_ITEM_OUTCOME_REJECTED),
            duplicates=count(pb.BATCH_ITEM_OUTCOME_DUPLICATE),
            existing=count(pb.BATCH_ITEM_OUTCOME_EXISTING),
            tokens_estimated=answer.token_estimate.total_tokens,
            items=list(answer.items),
            proto=answer,
        )

    @property
    def workflow_ids(self) -> list[str]:
        """The runs the batch queued (accepted items)."""
        return [i.workflow_id for i in self.items if i.outcome == pb.BATCH_ITEM_OUTCOME_ACCEPTED]

    def rejections(self) -> dict[int, list[str]]:
        """Per rejected item index: its field violations as ``field: description``."""
        return {
            i.index: [f"{v.field}: {v.description}" for v in i.field_violations]
            for i in self.items
            if i.outcome == pb.BATCH_ITEM_OUTCOME_REJECTED
        }


@dataclass
class Quote:
    """What a push would answer, without doing it (``validate_only``): the run it would create, or
    the existing run that answers it, with its plan, tokens, cost, queue position and ETA.

    Nothing was created or reserved: :attr:`workflow_id` is the id the new run would get when
    :attr:`creates`, else the id of the existing run with the same inputs. :attr:`plan` maps each
    step, in plan order, to ``"run"`` (a new run runs it), ``"reuse"`` (nothing new runs: the
    existing run's output is what the role gets) or ``"skip"`` (not part of the run). When an
    existing run answers, :attr:`tokens` and :attr:`eta_seconds` are that run's, as a push
    would answer them; nothing more would be spent.
    """

    workflow_id: str
    role_id: str
    creates: bool
    state: RunState
    position: int
    #: What the run would wait for (``"NO_WORKER"``, ``"COMPANY_CAP"``, …); ``""`` when nothing.
    wait_reason: str
    eta_seconds: int
    tokens: int
    cost_micros: int
    currency: str
    plan: dict[str, str]
    proto: pb.PushResponse = field(repr=False)

    @classmethod
    def from_proto(cls, answer: pb.PushResponse) -> Quote:
        return cls(
            workflow_id=answer.workflow_id,
            role_id=answer.role_id,
            creates=answer.created,
            state=RunState.from_proto(answer.status),
            position=answer.position_in_queue,
            wait_reason=_wait_reason(answer.wait_reason),
            eta_seconds=answer.estimated_duration_seconds,
            tokens=answer.token_estimate.total_tokens,
            cost_micros=answer.token_estimate.cost_micros,
            currency=answer.token_estimate.currency,
            plan=_plan(answer.plan),
            proto=answer,
        )

    @property
    def cost(self) -> float:
        """The estimated cost in :attr:`currency` units (0 when the server prices nothing)."""
        return self.cost_micros / 1_000_000

    def __str__(self) -> str:
        which = "new run" if self.creates else "existing run"
        queue = f" · #{self.position} in queue" if self.position else ""
        waits = f" · waits {self.wait_reason}" if self.wait_reason else ""
        return (
            f"{which} {self.workflow_id} [{self.state}] · steps {_steps(self.plan)} · "
            f"{_cost(self.tokens, self.cost_micros, self.currency)} · about {self.eta_seconds} s{queue}{waits}"
        )


@dataclass
class BatchQuoteItem:
    """What a batch would answer for one item, without doing it: its outcome (``"ACCEPTED"``,
    ``"REJECTED"``, ``"EXISTING"``, ``"DUPLICATE"``) and, per outcome, the run it would create or
    that answers it, its plan (as :attr:`Quote.plan`), tokens and ETA, or its field violations."""

    index: int
    client_ref: str
    outcome: str
    workflow_id: str
    role_id: str
    state: RunState
    position: int
    wait_reason: str
    #: Why the item would be rejected, as ``field: description``.
    violations: list[str]
    tokens: int
    cost_micros: int
    eta_seconds: int
    plan: dict[str, str]
    proto: pb.PushBatchItemResult = field(repr=False)

    @classmethod
    def from_proto(cls, item: pb.PushBatchItemResult) -> BatchQuoteItem:
        return cls(
            index=item.index,
            client_ref=item.client_ref,
            outcome=_outcome(item.outcome),
            workflow_id=item.workflow_id,
            role_id=item.role_id,
            state=RunState.from_proto(item.status),
            position=item.position_in_queue,
            wait_reason=_wait_reason(item.wait_reason),
            violations=[f"{v.field}: {v.description}" for v in item.field_violations],
            tokens=item.token_estimate.total_tokens,
            cost_micros=item.token_estimate.cost_micros,
            eta_seconds=item.estimated_duration_seconds,
            plan=_plan(item.plan),
            proto=item,
        )

    def __str__(self) -> str:
        ref = f" {self.client_ref}" if self.client_ref else ""
        if self.violations:
            return f"#{self.index}{ref} {self.outcome}: " + "; ".join(self.violations)
        return f"#{self.index}{ref} {self.outcome} {self.workflow_id} · steps {_steps(self.plan)} · " + (
            f"{self.tokens} tokens · about {self.eta_seconds} s"
        )


@dataclass
class BatchQuote:
    """What PushBatch would answer, without doing it (``validate_only``): one
    :class:`BatchQuoteItem` per item, the tokens and cost of the items it would accept, and when
    the last of its runs would end. Nothing was created or reserved."""

    accepted: int
    rejected: int
    duplicates: int
    existing: int
    tokens: int
    cost_micros: int
    currency: str
    #: Estimated seconds until the last run the batch would create ends.
    eta_seconds: int
    items: list[BatchQuoteItem] = field(repr=False)
    proto: pb.PushBatchResponse = field(repr=False)

    @classmethod
    def from_proto(cls, answer: pb.PushBatchResponse) -> BatchQuote:
        items = [BatchQuoteItem.from_proto(item) for item in answer.items]
        outcomes = Counter(item.outcome for item in items)
        return cls(
            accepted=outcomes["ACCEPTED"],
            rejected=outcomes["REJECTED"],
            duplicates=outcomes["DUPLICATE"],
            existing=outcomes["EXISTING"],
            tokens=answer.token_estimate.total_tokens,
            cost_micros=answer.token_estimate.cost_micros,
            currency=answer.token_estimate.currency,
            eta_seconds=answer.progress.estimated_duration_seconds,
            items=items,
            proto=answer,
        )

    @property
    def cost(self) -> float:
        """The estimated cost in :attr:`currency` units (0 when the server prices nothing)."""
        return self.cost_micros / 1_000_000

    def rejections(self) -> dict[int, list[str]]:
        """Per item index that would be rejected: its field violations as ``field: description``."""
        return {item.index: item.violations for item in self.items if item.outcome == "REJECTED"}

    def __str__(self) -> str:
        counts = (
            f"{self.accepted} accepted, {self.rejected} rejected, {self.existing} existing, "
            f"{self.duplicates} duplicate"
        )
        ends = f" · the last run ends in about {self.eta_seconds} s" if self.accepted else ""
        return f"{counts} · {_cost(self.tokens, self.cost_micros, self.currency)}{ends}"


@dataclass
class BatchProgress:
    """A batch's aggregate progress, as watch snapshots and heartbeats carry it."""

    batch_id: str
    done: int
    total: int
    #: How many of the batch's runs are in each state.
    counts: dict[RunState, int]
    estimated_seconds: int

    @classmethod
    def from_proto(cls, batch: res.BatchProgress) -> BatchProgress:
        return cls(
            batch_id=batch.batch_id,
            done=batch.done,
            total=batch.total,
            counts={RunState.from_proto(c.status): c.count for c in batch.counts},
            estimated_seconds=batch.estimated_duration_seconds,
        )

    @property
    def finished(self) -> bool:
        """Whether every run of the batch has ended."""
        return self.total > 0 and self.done >= self.total

    def __str__(self) -> str:
        states = ", ".join(f"{state} {n}" for state, n in sorted(self.counts.items()))
        left = "" if self.finished else f" · about {self.estimated_seconds} s left"
        return f"{self.done}/{self.total} ended ({states}){left}"


@dataclass
class WatchEvent:
    """One message of a watch stream: a snapshot run, an event of a run, or a heartbeat."""

    kind: str
    workflow_id: str
    sequence: int
    #: The run's state on snapshots and status changes; ``None`` on step changes and heartbeats.
    status: RunState | None
    step: str
    step_status: str
    run: Run | None
    resume_token: str = field(repr=False)
    proto: pb.WatchStatusResponse = field(repr=False)
    #: A batch watch's aggregate progress, on snapshots and heartbeats.
    batch: BatchProgress | None = None

    @classmethod
    def from_proto(cls, message: pb.WatchStatusResponse) -> list[WatchEvent]:
        """The events of one stream message: one per run of a snapshot (one empty snapshot event
        when it has none), one for an event, one for a heartbeat."""
        kind = message.WhichOneof("kind")
        if kind == "snapshot":
            token = message.resume_token
            batch = BatchProgress.from_proto(message.snapshot.batch) if message.snapshot.HasField("batch") else None
            return [
                cls(
                    "snapshot", r.workflow_id, r.sequence, RunState.from_proto(r.status), r.current_step, "",
                    Run.from_proto(r), token, message, batch,
                )
                for r in message.snapshot.runs
            ] or [cls("snapshot", "", 0, None, "", "", None, token, message, batch)]
        if kind == "event":
            event = message.event
            change = event.WhichOneof("change")
            status = RunState.from_proto(event.status_change.status) if change == "status_change" else None
            step = event.step_change.step if change == "step_change" else ""
            step_status = res.StepState.Name(event.step_change.status).removeprefix("STEP_STATE_") if step else ""
            run = Run.from_proto(event.run) if event.HasField("run") else None
            return [cls("event", event.workflow_id, event.sequence, status, step, step_status, run, message.resume_token, message)]
        batch = BatchProgress.from_proto(message.heartbeat.batch) if message.heartbeat.HasField("batch") else None
        return [cls("heartbeat", "", 0, None, "", "", None, message.resume_token, message, batch)]

    def __str__(self) -> str:
        if self.kind == "heartbeat":
            return "heartbeat"
        what = self.status or f"{self.step} {self.step_status}"
        return f"{self.kind} #{self.sequence} {self.workflow_id}: {what}"


@dataclass
class Usage:
    """A company's token budget and usage in a month."""

    company_id: str
    period: str
    budget_tokens: int
    used_tokens: int
    reserved_tokens: int
    #: What is left of the budget; ``None`` when the company has no budget (nothing limits it).
    remaining_tokens: int | None
    by_step: dict[str, int]
    used_cost: float
    currency: str
    proto: pb.GetUsageResponse = field(repr=False)
    #: Tokens used per day of the month (``"2026-12-01"`` → tokens), days without use left out.
    by_day: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, answer: pb.GetUsageResponse) -> Usage:
        return cls(
            company_id=answer.company_id,
            period=answer.period,
            budget_tokens=answer.budget_tokens,
            used_tokens=answer.used_tokens,
            reserved_tokens=answer.reserved_tokens,
            remaining_tokens=answer.remaining_tokens if answer.HasField("remaining_tokens") else None,
            by_step={s.step: s.total_tokens for s in answer.steps},
            used_cost=answer.used_cost_micros / 1_000_000,
            currency=answer.currency,
            proto=answer,
            by_day={d.date: d.total_tokens for d in answer.days},
        )


def _step_state(value: res.StepState.ValueType) -> str:
    """A ``StepState`` without its prefix (``"COMPLETED"``); ``""`` when unset or unknown."""
    return _enum_name(res.StepState.Name, value, "STEP_STATE_")


def _output_kind(value: res.OutputKind.ValueType) -> str:
    """An ``OutputKind`` in lowercase without its prefix (``"task"``)."""
    return _enum_name(res.OutputKind.Name, value, "OUTPUT_KIND_", "UNSPECIFIED").lower()


@dataclass
class StepComparison:
    """One step of two runs side by side: one row of :attr:`Comparison.steps`."""

    step: str
    #: The step ran in the compared run (it was not reused, skipped or left unreached).
    ran: bool
    base_status: str
    run_status: str
    input_changed: bool
    output_changed: bool
    model_changed: bool
    base_model: str
    run_model: str
    base_duration_ms: int
    run_duration_ms: int
    base_tokens: int
    run_tokens: int
    #: Names of the outputs only the compared run has.
    added: list[str]
    #: Names of the outputs only the base run has.
    removed: list[str]
    #: Outputs in both whose name or scores differ.
    changed: int
    proto: pb.StepComparison = field(repr=False)

    @classmethod
    def from_proto(cls, step: pb.StepComparison) -> StepComparison:
        base, run = step.base, step.run
        return cls(
            step=step.step,
            ran=step.ran,
            base_status=_step_state(base.status),
            run_status=_step_state(run.status),
            input_changed=step.input_changed,
            output_changed=step.output_changed,
            model_changed=step.model_changed,
            base_model=base.model,
            run_model=run.model,
            base_duration_ms=base.duration_ms,
            run_duration_ms=run.duration_ms,
            base_tokens=base.tokens.total_tokens,
            run_tokens=run.tokens.total_tokens,
            added=[item.name for item in step.added],
            removed=[item.name for item in step.removed],
            changed=len(step.changed),
            proto=step,
        )


@dataclass
class Comparison:
    """Two runs of one role compared step by step (``CompareRuns``).

    ``pandas.DataFrame(comparison.records())`` is one row per step;
    ``pandas.DataFrame(comparison.output_changes())`` one row per output that differs, with the
    score that changed and its two values.
    """

    base: Run
    run: Run
    steps: list[StepComparison]
    proto: pb.CompareRunsResponse = field(repr=False)

    @classmethod
    def from_proto(cls, answer: pb.CompareRunsResponse) -> Comparison:
        return cls(
            base=Run.from_proto(answer.base),
            run=Run.from_proto(answer.run),
            steps=[StepComparison.from_proto(s) for s in answer.steps],
            proto=answer,
        )

    def records(self) -> list[dict[str, object]]:
        """One plain dict per step, the columns of :class:`StepComparison`."""
        return [_record(step) for step in self.steps]

    def output_changes(self) -> list[dict[str, object]]:
        """One plain dict per output that differs between the runs: its step, ``change``
        (``added``, ``removed`` or ``changed``), kind, key and name, and for a changed score its
        name and both values (one row per score; a rename without a score change has
        ``score`` ``None``)."""
        rows: list[dict[str, object]] = []

        def row(step: str, change: str, item: res.OutputItem, **more: object) -> dict[str, object]:
            return {
                "step": step,
                "change": change,
                "kind": _output_kind(item.kind),
                "key": item.key,
                "name": item.name,
                "score": None,
                "base": None,
                "run": None,
                **more,
            }

        for step in self.proto.steps:
            rows.extend(row(step.step, "added", item) for item in step.added)
            rows.extend(row(step.step, "removed", item) for item in step.removed)
            for change in step.changed:
                was, now = change.base, change.run
                scores = sorted(set(was.scores) | set(now.scores))
                differing = [s for s in scores if was.scores.get(s) != now.scores.get(s)]
                for score in differing:
                    rows.append(row(step.step, "changed", now, score=score, base=was.scores.get(score), run=now.scores.get(score)))
                if not differing:
                    rows.append(row(step.step, "changed", now, base=was.name, run=now.name))
        return rows

    def __str__(self) -> str:
        ran = [s.step for s in self.steps if s.ran]
        return f"{self.base.workflow_id} -> {self.run.workflow_id}: {len(ran)} steps ran ({', '.join(ran) or 'none'})"


def _record(row: object) -> dict[str, object]:
    """One table row: a result's fields (without the message and nested objects), or the fields
    of a message such as an audit entry (timestamps as datetimes)."""
    if isinstance(row, Message):
        record: dict[str, object] = {}
        for f in row.DESCRIPTOR.fields:
            value = getattr(row, f.name)
            record[f.name] = _time(value) if isinstance(value, Timestamp) else value
        return record
    return {k: v for k, v in vars(row).items() if k not in ("proto", "run", "items")}


def to_dataframe(rows: Iterable[object]) -> Any:
    """A pandas DataFrame of runs, events, quotes, a batch quote's items or audit entries (needs
    pandas installed)."""
    try:
        import pandas as pd
    except ImportError as missing:  # pragma: no cover - depends on the environment
        raise ImportError("to_dataframe needs pandas: pip install pandas") from missing
    return pd.DataFrame.from_records([_record(row) for row in rows])
