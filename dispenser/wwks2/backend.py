"""What the WWKS2 server needs from the machine, and what the machine tells the server.

Two typed interfaces meet here:

- :class:`Wwks2Backend`, implemented by the machine (the daemon, over its dispensing core
  and scheduler): status, stock, output tasks, article master. The server calls it from
  the event loop; every method is a coroutine and must not hold the loop long (the daemon
  moves journal commits off the loop as it does for shipments).
- :class:`Wwks2Events`, implemented by the server (:class:`~dispenser.wwks2.server.
  Wwks2Server`): the machine reports finished output tasks, stock changes and stored
  packs, and asks the pharmacy software about a pack being loaded.

The types speak the machine's side of the mapping (docs/wwks2.md): WWKS2 article ids,
pack ids, the machine's output points, plain text (a scan holds real GS characters; the
server converts ``\\xHH``). WWKS2 carries no patient data, and nothing here does.

Output tasks are identified by :class:`TaskKey`: the requesting subscriber id and the
OutputRequest ``Id`` (the pharmacy software's order number). The backend journals an
accepted task like a shipment, exactly once across crashes, and keeps a finished one
queryable for ``task_retention_days``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal, Protocol

__all__ = [
    "ArticleDetails",
    "ArticleStock",
    "CancelStatus",
    "ComponentStatus",
    "DispensedPack",
    "InputAnswer",
    "InputOutcome",
    "InputVerdict",
    "LabelStatus",
    "MachineStatus",
    "MasterArticle",
    "MasterSetResult",
    "OutputCriterion",
    "OutputDecision",
    "OutputOutcome",
    "OutputTask",
    "Priority",
    "ScannedPack",
    "StockFilter",
    "StockPack",
    "StockQuery",
    "TaskKey",
    "TaskReport",
    "TaskStatus",
    "Wwks2Backend",
    "Wwks2Events",
]

Priority = Literal["Lowest", "Low", "Normal", "High", "Highest"]
TaskStatus = Literal["Unknown", "Queued", "InProcess", "Aborting", "Aborted", "Completed",
                     "Incomplete"]
CancelStatus = Literal["Cancelled", "CancelError", "Unknown"]
LabelStatus = Literal["Labelled", "NotLabelled", "LabelError"]
# The pharmacy software's answer about a pack being loaded; "NoAnswer" when none came in
# time (or no client that takes InputRequest is connected).
InputVerdict = Literal[
    "Allowed", "AllowedForFridge", "Rejected", "RejectedNoExpiryDate",
    "RejectedNoPickingIndicator", "RejectedNoBatchNumber", "RejectedNoStockLocation",
    "RejectedInvalidStockLocation", "RejectedNoSerialNumber", "NoAnswer",
]


# --------------------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """One part of the machine as StatusResponse reports it (robot, printer, an output)."""

    description: str  # "Robot", "Label printer", "Output 2"
    ready: bool
    text: str = ""  # why it is not ready ("emergency stop", "paper out", "tote full")
    kind: Literal["robot", "printer", "output"] = "robot"


@dataclass(frozen=True, slots=True)
class MachineStatus:
    """``ready``: the machine takes and works output tasks now."""

    ready: bool
    text: str = ""
    components: tuple[ComponentStatus, ...] = ()


# --------------------------------------------------------------------------- stock


@dataclass(frozen=True, slots=True)
class StockFilter:
    """One StockInfo Criteria: every field given must match (AND)."""

    article_id: str | None = None
    batch_number: str | None = None
    external_id: str | None = None
    stock_location_id: str | None = None
    machine_location: str | None = None


@dataclass(frozen=True, slots=True)
class StockQuery:
    """``filters`` are ORed; none means the whole stock."""

    filters: tuple[StockFilter, ...] = ()
    include_packs: bool = True
    include_article_details: bool = False


@dataclass(frozen=True, slots=True)
class StockPack:
    """A pack in the machine. ``available`` is False for a quarantined pack, one too close
    to expiry to dispense, or one reserved for a shipment or another output."""

    pack_id: int  # > 0, the same id OutputMessage reports when it is dispensed
    available: bool
    batch_number: str | None = None
    expiry_date: date | None = None
    serial_number: str | None = None
    scan_code: str | None = None  # plain text: GS1 separators as real \x1d characters
    external_id: str | None = None
    stock_in_date: date | None = None
    delivery_number: str | None = None
    in_fridge: bool = False


@dataclass(frozen=True, slots=True)
class ArticleDetails:
    name: str
    dosage_form: str = ""
    packaging_unit: str = ""
    max_sub_item_quantity: int = 0


@dataclass(frozen=True, slots=True)
class ArticleStock:
    """An article and its packs. ``quantity`` counts every pack reported (available or
    not); ``packs`` is empty when the query did not include them."""

    article_id: str
    quantity: int
    packs: tuple[StockPack, ...] = ()
    details: ArticleDetails | None = None


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True, order=True)
class TaskKey:
    """An output task: the subscriber that asked for it and its OutputRequest Id."""

    subscriber_id: int
    task_id: str


@dataclass(frozen=True, slots=True)
class OutputCriterion:
    """What one Criteria asks for, with "0 and empty mean not set" already applied.

    ``quantity`` is a number of packs (>= 1); when ``sub_item_quantity`` is set the backend
    computes the packs from it instead. ``pack_id`` selects one pack (quantity 1).
    ``single_batch``: all packs of this criterion from one batch. ``minimum_expiry_date``:
    only packs expiring on or after it. FEFO among the packs that qualify.
    """

    quantity: int
    article_id: str | None = None
    pack_id: int | None = None
    batch_number: str | None = None
    single_batch: bool = False
    minimum_expiry_date: date | None = None
    sub_item_quantity: int | None = None
    external_id: str | None = None
    serial_number: str | None = None
    stock_location_id: str | None = None
    machine_location: str | None = None
    label_requested: bool = False  # the machine cannot label packs: reported NotLabelled


@dataclass(frozen=True, slots=True)
class OutputTask:
    """An OutputRequest the server found well-formed, for the backend to queue or reject.

    ``fingerprint`` is the same for two requests with the same content: a repeated
    request (same key, same fingerprint) is the same task, not a second one.
    """

    key: TaskKey
    actor: str  # for the audit trail: "wwks2:<subscriber id>@<peer address>"
    priority: Priority
    destination: int  # the WWKS2 OutputDestination asked for
    output_point: int  # the machine's output point it maps to
    criteria: tuple[OutputCriterion, ...]
    fingerprint: str
    box_number: str | None = None


@dataclass(frozen=True, slots=True)
class OutputDecision:
    """``Queued``: the task is journaled and an :class:`OutputOutcome` will follow.
    ``Rejected``: nothing was recorded and no outcome follows; ``text`` says why (logged)."""

    status: Literal["Queued", "Rejected"]
    text: str = ""


@dataclass(frozen=True, slots=True)
class DispensedPack:
    """One pack that physically left the machine for an output task."""

    article_id: str
    pack_id: int
    output_point: int  # where it actually went (may differ from the one asked for)
    batch_number: str | None = None
    expiry_date: date | None = None
    serial_number: str | None = None
    scan_code: str | None = None
    external_id: str | None = None
    label_status: LabelStatus | None = None  # only when a label was requested
    box_number: str | None = None


@dataclass(frozen=True, slots=True)
class OutputOutcome:
    """A finished output task. ``key`` None is a manual output (staff at the machine),
    reported with OutputMessage Id "1". ``unserved`` lists the article ids of criteria
    that got fewer packs than asked (reported as empty Article elements)."""

    key: TaskKey | None
    status: Literal["Completed", "Incomplete", "Aborted"]
    priority: Priority
    destination: int  # the WWKS2 OutputDestination asked for
    packs: tuple[DispensedPack, ...] = ()
    unserved: tuple[str, ...] = ()
    box_number: str | None = None


@dataclass(frozen=True, slots=True)
class TaskReport:
    """What TaskInfo says about a task; ``packs`` (dispensed so far) when asked for."""

    status: TaskStatus
    packs: tuple[DispensedPack, ...] = ()
    destination: int | None = None


# --------------------------------------------------------------------------- articles


@dataclass(frozen=True, slots=True)
class MasterArticle:
    """One article of an ArticleMasterSet. ``product_codes``: its codes in other
    numberings (GTIN ...), from which the backend finds the drug."""

    article_id: str
    name: str = ""
    dosage_form: str = ""
    packaging_unit: str = ""
    requires_fridge: bool = False
    max_sub_item_quantity: int = 0
    product_codes: tuple[str, ...] = ()
    stock_location_id: str | None = None
    machine_location: str | None = None


@dataclass(frozen=True, slots=True)
class MasterSetResult:
    accepted: bool
    text: str = ""


# --------------------------------------------------------------------------- input


@dataclass(frozen=True, slots=True)
class ScannedPack:
    """A pack at the input point, as the machine read it (plain text)."""

    scan_code: str
    batch_number: str | None = None
    expiry_date: date | None = None
    serial_number: str | None = None
    external_id: str | None = None
    delivery_number: str | None = None


@dataclass(frozen=True, slots=True)
class InputAnswer:
    """The pharmacy software's decision on a pack. ``request_id`` is the InputRequest Id:
    pass it back to :meth:`Wwks2Events.input_finished` (and to ``request_input`` to ask
    again with the missing data). ``article_id`` defaults to the scan code when the
    answer named none. The other fields are what the answer said, None when it said
    nothing."""

    request_id: str
    verdict: InputVerdict
    text: str = ""
    article_id: str | None = None
    article_name: str | None = None
    requires_fridge: bool | None = None
    batch_number: str | None = None
    expiry_date: date | None = None
    serial_number: str | None = None
    subscriber_id: int | None = None  # who answered


@dataclass(frozen=True, slots=True)
class InputOutcome:
    """What became of a pack: stored (``pack_id`` > 0) or not (``pack_id`` 0).
    ``request_id`` None for a pack the machine loaded on its own ("local" input): the
    server gives the InputMessage a fresh numeric Id."""

    request_id: str | None
    article_id: str
    pack_id: int
    scan_code: str | None = None
    batch_number: str | None = None
    expiry_date: date | None = None
    serial_number: str | None = None
    external_id: str | None = None


# --------------------------------------------------------------------------- interfaces


class Wwks2Backend(Protocol):
    """The machine as the WWKS2 server sees it. Every call may raise only on a defect:
    the server then logs it and answers the safe way (docs/wwks2.md)."""

    async def machine_status(self) -> MachineStatus:
        """Ready or not, with a component per robot, printer and output point."""
        ...

    async def stock(self, query: StockQuery) -> Sequence[ArticleStock]:
        """Articles matching the query (an article id also matches a virtual id), with
        their packs when ``include_packs``. An article id the query names and the machine
        knows with no pack may be returned with quantity 0."""
        ...

    async def create_output(self, task: OutputTask) -> OutputDecision:
        """Queue or reject an output task. Rejected when the machine is not ready, the
        output point does not exist, an article is unknown, or the key is in use by a
        task with another fingerprint.
        The same key and fingerprint again answers Queued without a second task (and, if
        that task already finished, reports its outcome again)."""
        ...

    async def output_info(self, key: TaskKey, include_packs: bool) -> TaskReport:
        """The task's state; ``Unknown`` for a key never seen or past retention."""
        ...

    async def cancel_output(self, key: TaskKey, actor: str) -> CancelStatus:
        """Cancel a task. ``Cancelled`` when it will dispense nothing more: its outcome
        (Aborted, with any packs already dispensed) is reported through
        :meth:`Wwks2Events.output_finished`. ``CancelError`` for a finished task or one
        that can no longer stop; ``Unknown`` for an unknown key."""
        ...

    async def set_article_master(self, articles: Sequence[MasterArticle],
                                 actor: str) -> MasterSetResult:
        """Replace the whole article master (an empty list clears it)."""
        ...

    async def pending_outcomes(self, subscriber_id: int) -> Sequence[OutputOutcome]:
        """Outcomes of this subscriber's tasks that no connection of it received (it was
        not connected when they finished), oldest first; sent after its next Hello."""
        ...

    async def outcomes_delivered(self, keys: Sequence[TaskKey]) -> None:
        """These outcomes have now been sent to their subscriber."""
        ...


class Wwks2Events(Protocol):
    """What the machine tells the WWKS2 server; implemented by the server. The
    notifications never wait and never raise."""

    def output_finished(self, outcome: OutputOutcome) -> bool:
        """Send the OutputMessage to every connected client. True when a connection of the
        task's subscriber got it (otherwise it is pending for that subscriber)."""
        ...

    def stock_changed(self, article_ids: Iterable[str]) -> None:
        """These articles' stock changed: a StockInfoMessage follows (coalesced)."""
        ...

    def input_finished(self, outcome: InputOutcome) -> None:
        """Send the InputMessage (Completed with the new pack id, or Aborted)."""
        ...

    async def request_input(self, pack: ScannedPack, *, request_id: str | None = None,
                            is_new_delivery: bool = False,
                            set_picking_indicator: bool = False) -> InputAnswer:
        """Send InputRequest to the clients that take it and return the first answer, or
        verdict ``NoAnswer`` after ``input_timeout_s``. Every call is concluded by
        :meth:`input_finished` with the answer's ``request_id``."""
        ...


