"""Element types shared by several WWKS2 message families, with their exact spellings.

Every enumeration is a ``Literal`` and a tuple of its values in the one spelling (and case)
the pharmacy client library accepts; the codec writes exactly these.
"""

from __future__ import annotations

from datetime import date
from typing import Literal, get_args

from dispenser.wwks2.model import (
    BOOL,
    DATE,
    INT,
    UINT,
    Model,
    attr,
    child,
    children,
    model,
    text_child,
)

__all__ = [
    "CAPABILITIES",
    "Article",
    "Box",
    "Capability",
    "CapabilityName",
    "Component",
    "Envelope",
    "Handling",
    "InputHandling",
    "Label",
    "LabelStatus",
    "Pack",
    "PackError",
    "PackState",
    "ProductCode",
    "Routed",
    "State",
    "Subscriber",
    "Task",
    "TaskStatus",
    "TaskType",
]

CapabilityName = Literal[
    "KeepAlive", "Status", "Input", "InitiateInput", "ArticleMaster", "StockDelivery",
    "StockInfo", "Output", "TaskInfo", "TaskCancel", "Configuration", "StockLocationInfo",
    "InfeedInput",
]
CAPABILITIES: tuple[CapabilityName, ...] = get_args(CapabilityName)
SubscriberType = Literal["IMS", "Robot"]
State = Literal["Ready", "NotReady"]
ComponentType = Literal["StorageSystem", "BoxSystem"]
PackState = Literal["Available", "NotAvailable"]
Shape = Literal["Cuboid", "Cylinder"]
LabelStatus = Literal["Labelled", "NotLabelled", "LabelError"]
InputHandling = Literal[
    "Allowed", "AllowedForFridge", "Rejected", "RejectedNoExpiryDate",
    "RejectedNoPickingIndicator", "RejectedNoBatchNumber", "RejectedNoStockLocation",
    "RejectedInvalidStockLocation", "RejectedNoSerialNumber", "Completed", "Aborted",
]
TaskType = Literal["Output", "StockDelivery"]
TaskStatus = Literal[
    "Unknown", "Queued", "InProcess", "Aborting", "Aborted", "Completed", "Incomplete",
    "Cancelled", "CancelError",
]


@model("")
class Envelope(Model):
    """Base of every lead element: its ``Id`` (a string; a response repeats it)."""

    id: str = attr("Id")


@model("")
class Routed(Envelope):
    """A lead element with ``Source`` and ``Destination`` subscriber ids."""

    source: int | None = attr("Source", INT, default=None)
    destination: int | None = attr("Destination", INT, default=None)


@model("Capability")
class Capability(Model):
    name: str = attr("Name")


@model("Subscriber")
class Subscriber(Model):
    id: int = attr("Id", INT)
    type: SubscriberType = attr("Type", choices=get_args(SubscriberType))
    manufacturer: str | None = attr("Manufacturer", default=None)
    product_info: str | None = attr("ProductInfo", default=None)
    version_info: str | None = attr("VersionInfo", default=None)
    tenant_id: str | None = attr("TenantId", default=None)
    device_name: str | None = attr("DeviceName", default=None)
    capabilities: tuple[Capability, ...] = children(Capability, default=())


@model("Component")
class Component(Model):
    type: ComponentType = attr("Type", choices=get_args(ComponentType))
    description: str = attr("Description")
    state: State = attr("State", choices=get_args(State))
    state_text: str | None = attr("StateText", default=None)


@model("Handling")
class Handling(Model):
    input: InputHandling = attr("Input", choices=get_args(InputHandling))
    text: str | None = attr("Text", default=None)


@model("Error")
class PackError(Model):
    type: str = attr("Type")


@model("Pack")
class Pack(Model):
    """A pack in any message: stock, dispensed, or offered for input."""

    id: int | None = attr("Id", UINT, default=None)
    index: int | None = attr("Index", UINT, default=None)
    delivery_number: str | None = attr("DeliveryNumber", default=None)
    batch_number: str | None = attr("BatchNumber", default=None)
    external_id: str | None = attr("ExternalId", default=None)
    serial_number: str | None = attr("SerialNumber", default=None)
    expiry_date: date | None = attr("ExpiryDate", DATE, default=None)
    stock_in_date: date | None = attr("StockInDate", DATE, default=None)
    scan_code: str | None = attr("ScanCode", default=None)
    sub_item_quantity: int | None = attr("SubItemQuantity", UINT, default=None)
    depth: int | None = attr("Depth", UINT, default=None)
    width: int | None = attr("Width", UINT, default=None)
    height: int | None = attr("Height", UINT, default=None)
    shape: Shape | None = attr("Shape", choices=get_args(Shape), default=None)
    state: PackState | None = attr("State", choices=get_args(PackState), default=None)
    is_in_fridge: bool | None = attr("IsInFridge", BOOL, default=None)
    box_number: str | None = attr("BoxNumber", default=None)
    output_destination: int | None = attr("OutputDestination", INT, default=None)
    output_point: int | None = attr("OutputPoint", INT, default=None)
    label_status: LabelStatus | None = attr("LabelStatus", choices=get_args(LabelStatus),
                                            default=None)
    stock_location_id: str | None = attr("StockLocationId", default=None)
    machine_location: str | None = attr("MachineLocation", default=None)
    handling: Handling | None = child(Handling, default=None)
    error: PackError | None = child(PackError, default=None)


@model("ProductCode")
class ProductCode(Model):
    """An article's code in another numbering (GTIN, PZN ...)."""

    code: str = attr("Code")
    type: str | None = attr("Type", default=None)


@model("Article")
class Article(Model):
    """An article (the pharmacy software's product) with its packs."""

    id: str | None = attr("Id", default=None)
    name: str | None = attr("Name", default=None)
    dosage_form: str | None = attr("DosageForm", default=None)
    packaging_unit: str | None = attr("PackagingUnit", aliases=("PackingUnit",), default=None)
    max_sub_item_quantity: int | None = attr("MaxSubItemQuantity", UINT, default=None)
    requires_fridge: bool | None = attr("RequiresFridge", BOOL, default=None)
    virtual_id: str | None = attr("VirtualId", default=None)
    virtual_name: str | None = attr("VirtualName", default=None)
    stock_location_id: str | None = attr("StockLocationId", default=None)
    machine_location: str | None = attr("MachineLocation", default=None)
    quantity: int | None = attr("Quantity", UINT, default=None)
    product_codes: tuple[ProductCode, ...] = children(ProductCode, default=())
    packs: tuple[Pack, ...] = children(Pack, default=())


@model("Box")
class Box(Model):
    number: str = attr("Number")


@model("Label")
class Label(Model):
    """A label to print on a dispensed pack: template and content (text)."""

    template_id: str = attr("TemplateId")
    content: str | None = text_child("Content", default=None)


@model("Task")
class Task(Model):
    """A task in TaskInfo and TaskCancel; ``type`` may be absent in the newer
    TaskCancelOutput / OutputInfo spellings (it is then an Output)."""

    type: TaskType | None = attr("Type", choices=get_args(TaskType), default=None)
    id: str = attr("Id")
    status: TaskStatus | None = attr("Status", choices=get_args(TaskStatus), default=None)
    articles: tuple[Article, ...] = children(Article, default=())
    boxes: tuple[Box, ...] = children(Box, default=())
