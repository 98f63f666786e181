"""Output (dispense packs to an output), TaskInfo and TaskCancel.

An output keeps its ``Id`` across OutputRequest, OutputResponse and OutputMessage; TaskInfo
and TaskCancel refer to it by that Id. ``OutputInfo`` and ``TaskCancelOutput`` are the newer
(M622) names of TaskInfo and TaskCancel, accepted with the same content.
"""

from __future__ import annotations

from datetime import date
from typing import Literal, get_args

from dispenser.wwks2.messages.common import Article, Box, Label, Routed, Task
from dispenser.wwks2.model import BOOL, DATE, INT, UINT, Model, attr, child, children, model

__all__ = [
    "OutputCriteria",
    "OutputDetails",
    "OutputInfoRequest",
    "OutputInfoResponse",
    "OutputMessage",
    "OutputRequest",
    "OutputResponse",
    "OutputStatus",
    "Priority",
    "TaskCancelOutputRequest",
    "TaskCancelOutputResponse",
    "TaskCancelRequest",
    "TaskCancelResponse",
    "TaskInfoRequest",
    "TaskInfoResponse",
]

Priority = Literal["Lowest", "Low", "Normal", "High", "Highest"]
OutputStatus = Literal["Queued", "Rejected", "Completed", "Incomplete", "Aborted",
                       "BoxReleased"]


@model("Details")
class OutputDetails(Model):
    priority: Priority | None = attr("Priority", choices=get_args(Priority), default=None)
    output_destination: int = attr("OutputDestination", INT)
    output_point: int | None = attr("OutputPoint", INT, default=None)
    status: OutputStatus | None = attr("Status", choices=get_args(OutputStatus), default=None)


@model("Criteria")
class OutputCriteria(Model):
    """What to dispense. 0 and empty mean "not set" (the pharmacy client library always
    sends ``PackId="0" SubItemQuantity="0" SingleBatchNumber="False"``)."""

    article_id: str | None = attr("ArticleId", default=None)
    quantity: int = attr("Quantity", UINT)
    sub_item_quantity: int | None = attr("SubItemQuantity", UINT, default=None)
    minimum_expiry_date: date | None = attr("MinimumExpiryDate", DATE, default=None)
    batch_number: str | None = attr("BatchNumber", default=None)
    single_batch_number: bool | None = attr("SingleBatchNumber", BOOL, default=None)
    external_id: str | None = attr("ExternalId", default=None)
    serial_number: str | None = attr("SerialNumber", default=None)
    pack_id: int | None = attr("PackId", UINT, default=None)
    stock_location_id: str | None = attr("StockLocationId", default=None)
    machine_location: str | None = attr("MachineLocation", default=None)
    labels: tuple[Label, ...] = children(Label, default=())


@model("OutputRequest")
class OutputRequest(Routed):
    box_number: str | None = attr("BoxNumber", default=None)
    details: OutputDetails = child(OutputDetails)
    criteria: tuple[OutputCriteria, ...] = children(OutputCriteria, default=())


@model("OutputResponse")
class OutputResponse(Routed):
    box_number: str | None = attr("BoxNumber", default=None)
    details: OutputDetails = child(OutputDetails)
    criteria: tuple[OutputCriteria, ...] = children(OutputCriteria, default=())


@model("OutputMessage")
class OutputMessage(Routed):
    box_number: str | None = attr("BoxNumber", default=None)
    details: OutputDetails = child(OutputDetails)
    articles: tuple[Article, ...] = children(Article, default=())
    boxes: tuple[Box, ...] = children(Box, default=())


@model("TaskInfoRequest")
class TaskInfoRequest(Routed):
    include_task_details: bool | None = attr("IncludeTaskDetails", BOOL, default=None)
    tasks: tuple[Task, ...] = children(Task, default=())


@model("TaskInfoResponse")
class TaskInfoResponse(Routed):
    tasks: tuple[Task, ...] = children(Task, default=())


@model("OutputInfoRequest")
class OutputInfoRequest(TaskInfoRequest):
    pass


@model("OutputInfoResponse")
class OutputInfoResponse(TaskInfoResponse):
    pass


@model("TaskCancelRequest")
class TaskCancelRequest(Routed):
    tasks: tuple[Task, ...] = children(Task, default=())


@model("TaskCancelResponse")
class TaskCancelResponse(Routed):
    tasks: tuple[Task, ...] = children(Task, default=())


@model("TaskCancelOutputRequest")
class TaskCancelOutputRequest(TaskCancelRequest):
    pass


@model("TaskCancelOutputResponse")
class TaskCancelOutputResponse(TaskCancelResponse):
    pass
