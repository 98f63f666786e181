"""What the storage system answers to each message from the pharmacy software.

Every request gets its response under the exact response element name with the request's
``Id`` (the pharmacy client library waits without a timeout for most of them). When the
machine (the backend) fails on a defect, the answer is the safe one: Status NotReady,
Output Rejected, TaskCancel CancelError, ArticleMasterSet Rejected; StockInfo and
TaskInfo get an UnprocessedMessage instead of an answer that would state something false
(an empty stock, an Unknown task the IMS might order again).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dispenser.logs import get_logger
from dispenser.wwks2.backend import CancelStatus, TaskKey
from dispenser.wwks2.bulk import no_gc_passes
from dispenser.wwks2.connection import Connection
from dispenser.wwks2.errors import DataError, NotSupportedError, UnprocessedError
from dispenser.wwks2.mapping import (
    OutputRefused,
    master_articles,
    output_task,
    stock_query,
    task_element,
)
from dispenser.wwks2.messages import (
    CAPABILITIES,
    Article,
    ArticleMasterSetRequest,
    ArticleMasterSetResponse,
    Capability,
    Component,
    Envelope,
    HelloRequest,
    HelloResponse,
    InputResponse,
    KeepAliveRequest,
    KeepAliveResponse,
    OutputInfoRequest,
    OutputInfoResponse,
    OutputRequest,
    OutputResponse,
    Routed,
    SetResult,
    StatusRequest,
    StatusResponse,
    StockInfoRequest,
    StockInfoResponse,
    Subscriber,
    Task,
    TaskCancelOutputRequest,
    TaskCancelOutputResponse,
    TaskCancelRequest,
    TaskCancelResponse,
    TaskInfoRequest,
    TaskInfoResponse,
)

if TYPE_CHECKING:
    from dispenser.wwks2.server import Wwks2Server

__all__ = ["BackendFailed", "MessageHandlers", "announced_capabilities"]

log = get_logger(__name__)


class BackendFailed(UnprocessedError):
    """The machine failed on a defect while answering; the IMS is told to retry."""

    reason = "DataError"


def announced_capabilities(input_mode: str) -> tuple[str, ...]:
    """Every capability this storage system supports; Input only when it asks the IMS."""
    names = ["KeepAlive", "Status", "StockInfo", "Output", "TaskInfo", "TaskCancel",
             "ArticleMaster"]
    if input_mode == "wwks2":
        names.insert(2, "Input")
    assert all(name in CAPABILITIES for name in names)
    return tuple(names)


class MessageHandlers:
    """Answers messages for one server; :meth:`handle` is called per decoded message."""

    def __init__(self, server: Wwks2Server) -> None:
        self.server = server
        self.config = server.config
        self.backend = server.backend
        self._table: dict[type[Envelope], Callable[[Connection, Any], Awaitable[None]]] = {
            HelloRequest: self._hello,
            KeepAliveRequest: self._keepalive_request,
            KeepAliveResponse: self._keepalive_response,
            StatusRequest: self._status,
            StockInfoRequest: self._stock_info,
            OutputRequest: self._output,
            TaskInfoRequest: self._task_info,
            OutputInfoRequest: self._task_info,
            TaskCancelRequest: self._task_cancel,
            TaskCancelOutputRequest: self._task_cancel,
            InputResponse: self._input_response,
            ArticleMasterSetRequest: self._article_master_set,
        }

    async def handle(self, connection: Connection, message: Envelope) -> None:
        """Answer ``message``; raises :class:`UnprocessedError` when it cannot be processed."""
        if not isinstance(message, HelloRequest):
            if not connection.handshaken:
                raise NotSupportedError(
                    f"{message.TAG} before the handshake: send HelloRequest first",
                    message_id=message.id, lead=message.TAG)
            if isinstance(message, Routed):
                self._check_routing(message)
        handler = self._table[type(message)]
        await handler(connection, message)

    def _check_routing(self, message: Routed) -> None:
        ours = self.config.subscriber_id
        if message.destination not in (None, 0, ours):
            raise DataError(f"{message.TAG}@Destination {message.destination} is not this "
                            f"storage system ({ours})", message_id=message.id,
                            lead=message.TAG)

    def _reply_to(self, connection: Connection, message: Routed) -> int:
        if message.source is not None:
            return message.source
        return connection.subscriber_id or 0

    def _actor(self, connection: Connection, subscriber_id: int) -> str:
        return f"wwks2:{subscriber_id}@{connection.peer}"

    def _failed(self, message: Envelope, what: str) -> BackendFailed:
        incident = self.server.incident(what, message)
        return BackendFailed(f"the storage system failed to answer (incident {incident}); "
                             "ask again", message_id=message.id, lead=message.TAG)

    # -- session

    async def _hello(self, connection: Connection, message: HelloRequest) -> None:
        subscriber = message.subscriber
        if subscriber.type != "IMS":
            raise DataError(f"HelloRequest/Subscriber@Type must be IMS, not {subscriber.type}",
                            message_id=message.id, lead=message.TAG)
        ours = Subscriber(
            id=self.config.subscriber_id, type="Robot",
            manufacturer=self.config.manufacturer, product_info=self.config.product,
            version_info=self.server.version,
            capabilities=tuple(Capability(name=n)
                               for n in announced_capabilities(self.config.input_mode)))
        connection.send(HelloResponse(id=message.id, subscriber=ours))
        first = not connection.handshaken
        connection.handshake(subscriber)
        log.info("wwks2 client said hello", connection=connection.id, peer=connection.peer,
                 subscriber=subscriber.id, product=subscriber.product_info)
        if first:
            await self.server.send_pending_outcomes(connection)

    async def _keepalive_request(self, connection: Connection,
                                 message: KeepAliveRequest) -> None:
        connection.send(KeepAliveResponse(id=message.id, source=self.config.subscriber_id,
                                          destination=self._reply_to(connection, message)))

    async def _keepalive_response(self, connection: Connection,
                                  message: KeepAliveResponse) -> None:
        return None  # hearing from the client is what the keep-alive checks

    async def _status(self, connection: Connection, message: StatusRequest) -> None:
        try:
            status = await self.backend.machine_status()
        except Exception:
            self.server.incident("status", message)
            connection.send(StatusResponse(
                id=message.id, source=self.config.subscriber_id,
                destination=self._reply_to(connection, message), state="NotReady",
                state_text="the storage system failed to read its state"))
            return
        components: tuple[Component, ...] = ()
        if message.include_details:
            components = tuple(Component(
                type="StorageSystem", description=c.description,
                state="Ready" if c.ready else "NotReady", state_text=c.text or None)
                for c in status.components)
        connection.send(StatusResponse(
            id=message.id, source=self.config.subscriber_id,
            destination=self._reply_to(connection, message),
            state="Ready" if status.ready else "NotReady", state_text=status.text or None,
            components=components))

    # -- stock

    async def _stock_info(self, connection: Connection, message: StockInfoRequest) -> None:
        # Tens of thousands of short-lived objects: with cyclic collection on, they would
        # be swept (and promoted) by passes that hold the event loop for tens of ms. Off
        # until they are gone (``_answer_stock_info``'s locals die before it returns).
        with no_gc_passes():
            await self._answer_stock_info(connection, message)

    async def _answer_stock_info(self, connection: Connection,
                                 message: StockInfoRequest) -> None:
        query = stock_query(message)
        try:
            stock = await self.backend.stock(query)
        except Exception:
            raise self._failed(message, "stock") from None
        destination = self._reply_to(connection, message)

        def response(_: Connection, articles: tuple[Article, ...]) -> Envelope:
            return StockInfoResponse(id=message.id, source=self.config.subscriber_id,
                                     destination=destination, articles=articles)

        await self.server.send_stock((connection,), response, stock, query.include_packs,
                                     query.include_article_details)

    # -- outputs

    async def _output(self, connection: Connection, message: OutputRequest) -> None:
        subscriber = self._reply_to(connection, message)
        key = TaskKey(subscriber, message.id)
        status: str = "Rejected"
        with self.server.responding(key) as decision:
            try:
                task = output_task(message, key, self._actor(connection, subscriber),
                                   self.config)
            except OutputRefused as refused:
                log.warning("wwks2 output rejected", task=message.id, subscriber=subscriber,
                            reason=str(refused))
            else:
                try:
                    outcome = await self.backend.create_output(task)
                except Exception:
                    self.server.incident("output", message)
                else:
                    status = outcome.status
                    if status == "Rejected":
                        log.warning("wwks2 output rejected", task=message.id,
                                    subscriber=subscriber, reason=outcome.text)
            decision.queued = status == "Queued"
            if decision.queued:
                self.server.stats.outputs_queued += 1
            else:
                self.server.stats.outputs_rejected += 1
            connection.send(OutputResponse(
                id=message.id, source=self.config.subscriber_id, destination=subscriber,
                box_number=message.box_number,
                details=dataclasses.replace(message.details,
                                            status="Queued" if decision.queued else "Rejected"),
                criteria=message.criteria))

    async def _task_info(self, connection: Connection, message: TaskInfoRequest) -> None:
        subscriber = self._reply_to(connection, message)
        include = bool(message.include_task_details)
        tasks = []
        for task in message.tasks:
            if task.type == "StockDelivery":
                tasks.append(Task(type="StockDelivery", id=task.id, status="Unknown"))
                continue
            key = TaskKey(subscriber, task.id)
            try:
                report = await self.backend.output_info(key, include)
            except Exception:
                raise self._failed(message, "task info") from None
            tasks.append(dataclasses.replace(task_element(key, report, include, self.config),
                                             type=task.type or "Output"))
        cls = OutputInfoResponse if isinstance(message, OutputInfoRequest) else TaskInfoResponse
        connection.send(cls(id=message.id, source=self.config.subscriber_id,
                            destination=subscriber, tasks=tuple(tasks)))

    async def _task_cancel(self, connection: Connection, message: TaskCancelRequest) -> None:
        subscriber = self._reply_to(connection, message)
        actor = self._actor(connection, subscriber)
        answers = []
        keys = [TaskKey(subscriber, t.id) for t in message.tasks]
        with self.server.responding(*keys):
            for task, key in zip(message.tasks, keys, strict=True):
                status: CancelStatus
                if task.type == "StockDelivery":
                    status = "Unknown"
                else:
                    try:
                        status = await self.backend.cancel_output(key, actor)
                    except Exception:
                        self.server.incident("task cancel", message)
                        status = "CancelError"
                answers.append(Task(type=task.type, id=task.id, status=status))
            cls = (TaskCancelOutputResponse if isinstance(message, TaskCancelOutputRequest)
                   else TaskCancelResponse)
            connection.send(cls(id=message.id, source=self.config.subscriber_id,
                                destination=subscriber, tasks=tuple(answers)))

    # -- input and articles

    async def _input_response(self, connection: Connection, message: InputResponse) -> None:
        if not self.server.answer_input(message):
            raise DataError(f"no InputRequest with Id {message.id} is waiting for an answer "
                            "(it was answered already or timed out)",
                            message_id=message.id, lead=message.TAG)

    async def _article_master_set(self, connection: Connection,
                                  message: ArticleMasterSetRequest) -> None:
        subscriber = self._reply_to(connection, message)
        try:
            articles = master_articles(message)
        except ValueError as error:
            result = SetResult(value="Rejected", text=str(error))
        else:
            try:
                outcome = await self.backend.set_article_master(
                    articles, self._actor(connection, subscriber))
            except Exception:
                incident = self.server.incident("article master", message)
                result = SetResult(value="Rejected",
                                   text=f"the storage system failed (incident {incident})")
            else:
                result = SetResult(value="Accepted" if outcome.accepted else "Rejected",
                                   text=outcome.text or None)
        connection.send(ArticleMasterSetResponse(
            id=message.id, source=self.config.subscriber_id, destination=subscriber,
            set_result=result))
