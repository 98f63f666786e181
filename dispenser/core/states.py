"""Lifecycle states of orders, shipments, packs and output tasks.

Plain ``enum.Enum`` with ``str`` values (not StrEnum) so a transitions-based lifecycle table
can be plugged in later. Every change of state goes through one function per entity in
``dispenser.core`` (``_set_order_state``, ``_set_shipment_state``, ``_set_pack_state``).

Order::

    received --(merge window closes, stock reserved)--> queued --> picking --> labelling
       |  \\                                   \\                                   |
       |   held (check holds / stock_short) --> received | queued                completed
       +--> cancelled | rejected | failed

Shipment::

    forming --> queued --> picking --> labelling --> completed
        \\--> held (stock_short) --> queued          (any open state --> cancelled | failed)

Pack::

    loading --> in_stock --> picked --> dispensed | disposed (a destruction tote)
       \\--> refused   \\--> quarantined | missing | dropped

Output task (packs picked to an output that is not a patient's shipment)::

    queued --> in_process --> completed | incomplete
       |           \\--> aborting (cancelled or failed while picking) --> aborted
       +--> aborted | incomplete (nothing could be reserved)
"""

from __future__ import annotations

import enum


class OrderState(enum.Enum):
    RECEIVED = "received"
    HELD = "held"
    QUEUED = "queued"
    PICKING = "picking"
    LABELLING = "labelling"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    FAILED = "failed"


class ShipmentState(enum.Enum):
    FORMING = "forming"
    HELD = "held"
    QUEUED = "queued"
    PICKING = "picking"
    LABELLING = "labelling"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class PackState(enum.Enum):
    LOADING = "loading"
    IN_STOCK = "in_stock"
    PICKED = "picked"
    DISPENSED = "dispensed"
    # Handed on in a tote for destruction (the expiry sweep): out of the machine, never
    # to a patient.
    DISPOSED = "disposed"
    QUARANTINED = "quarantined"
    MISSING = "missing"
    DROPPED = "dropped"
    REFUSED = "refused"


class TaskState(enum.Enum):
    QUEUED = "queued"
    IN_PROCESS = "in_process"
    ABORTING = "aborting"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    ABORTED = "aborted"


ORDER_FINAL = frozenset({OrderState.COMPLETED, OrderState.CANCELLED, OrderState.REJECTED,
                         OrderState.FAILED})
SHIPMENT_FINAL = frozenset({ShipmentState.COMPLETED, ShipmentState.CANCELLED,
                            ShipmentState.FAILED})
TASK_FINAL = frozenset({TaskState.COMPLETED, TaskState.INCOMPLETE, TaskState.ABORTED})
# Before picking starts an order can still be taken out of its shipment.
ORDER_CANCELLABLE = frozenset({OrderState.RECEIVED, OrderState.HELD, OrderState.QUEUED})
