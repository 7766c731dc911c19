"""Amazon DynamoDB stores (``dynamodb://REGION/TABLE``): botocore, the client under boto3 (sync),
and aiobotocore (asyncio).

Layout: one item per user key (partition key ``pk``, a string; no sort key) holding every limit
state of that key, for every rule that uses it, and its concurrency leases, as JSON in ``d``; a
version token ``v``; and ``exp``, the table's TTL attribute. A decision reads the item (a strongly
consistent ``GetItem``), runs the pure Python algorithms (:func:`ratekeeper.algorithms.evaluate`)
and writes the result back with a conditional ``PutItem`` (``v`` unchanged, or the item absent).
A failed condition means another app server wrote first: the failed write returns the item as it
is now (``ReturnValuesOnConditionCheckFailure``), so the retry needs no read; after a jittered
pause, at most ``max_retries`` attempts, then `StoreUnavailable` (the limiter's
``on_store_error`` decides). All limits of a key live in one item, so a multi-limit decision is
all-or-nothing; a denial writes nothing. ``v`` is a random token rather than a counter: TTL
deletes an idle item, and a counter restarting at 1 could match a stale copy (ABA).

Consistency: linearizable per user key (every admitted request is one successful conditional
write on one item; no update is lost). The item this store last wrote is remembered, so in the
steady state a decision is one round trip; an answer that writes nothing (a denial, a peek) is
always given from a fresh read.

Several checks (``apply_checks``: chains, reservations, priority classes): checks on one key are
one conditional write in that key's turn, like a hit; checks on several keys read every item (one
``BatchGetItem``), run :func:`~ratekeeper.algorithms.checks.evaluate_checks` and write every
changed item in one ``TransactWriteItems`` (each on its version, a ``ConditionCheck`` on each item
read but unchanged): atomic over up to 100 items. A transaction cancelled by conflicts is retried
from the items it returned, like a conditional write; in a process, transactions take turns on
their items in key order (:class:`~ratekeeper.stores.dynamodb._core.Locks`).

Time: DynamoDB has no server clock that a condition could read, so time is the caller's clock
(the limiter's ``clock``, wall time by default): app servers whose clocks are skewed by d seconds
disagree about refills by d (a token bucket refills up to d x rate early or late; fixed windows
switch d seconds apart). Keep app server clocks NTP-synchronized.

Expiry: each limit state records when it is fully replenished and is dropped on the next write of
its item after that; an item left empty is deleted. ``exp`` is when the last state of the item is
replenished (and its last lease expired) plus a minute, so that DynamoDB's TTL deletes an idle
item (within a few days, as DynamoDB does; until then it is read as replenished).

Deadline: every call (a decision with its retries, a reset, a lease) finishes within ``timeout``
(0.5 s) of its start, the wait for its key's turn, the connection and every request included,
however many callers wait, or raises :class:`~ratekeeper.StoreUnavailable`: botocore retries
nothing (``total_max_attempts=1``) and its socket timeouts are ``connect_timeout`` and
``read_timeout`` (default: ``timeout``); the sync store sends each request from a small pool of
worker threads and stops waiting at the deadline, the asyncio store cancels. Throttling, 5xx
answers, a missing table, refused credentials and connection errors are `StoreUnavailable`.
A request that the server received before its caller gave up may still be applied (like any
remote store without a server clock: the charge of a request answered by ``on_store_error``).

Credentials and region come from boto3's usual chain (botocore's: environment, profiles, roles) when
the URL does not name them; ``endpoint_url`` points at a local endpoint.

Table: ``ratekeeper migrate dynamodb://REGION/TABLE`` (or :meth:`DynamoDBStore.create_table`)
creates it with on-demand billing and turns TTL on; running it again changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from ratekeeper._drive import drive, drive_async
from ratekeeper.algorithms.checks import Check
from ratekeeper.decision import Decision
from ratekeeper.errors import StoreUnavailable
from ratekeeper.stores.base import Applied, Rule
from ratekeeper.stores.dynamodb._core import (
    KEY,
    Call,
    Change,
    Core,
    Lead,
    Locks,
    Pause,
    Plan,
    Step,
    Turns,
    Waiting,
    combine,
    create_table,
    item_key,
    items_of,
    late,
    one_key,
    outcome,
    split_url,
)

__all__ = ["MIGRATE_TIMEOUT", "AsyncDynamoDBStore", "DynamoDBStore", "KEY", "item_key"]

T = TypeVar("T")

MIGRATE_SECONDS = 120.0  # a table's creation (CREATING -> ACTIVE) may take this long
MIGRATE_TIMEOUT = 10.0  # seconds per request of a migration (not a decision: no hurry)
_clock = time.monotonic  # deadlines: monotonic seconds
_sessions = threading.Lock()  # botocore sessions are not thread-safe to make clients
_shared: dict[str, Any] = {}  # one session per library, so service models load once


def _session(kind: str) -> Any:
    session = _shared.get(kind)
    if session is None:
        if kind == "botocore":
            import botocore.session

            session = botocore.session.get_session()
        else:
            import aiobotocore.session

            session = aiobotocore.session.AioSession()
            loader = session.get_component("data_loader")  # models load now, not in a decision
            for model in ("service-2", "endpoint-rule-set-1"):
                loader.load_service_model("dynamodb", model)
        _shared[kind] = session
    return session


class DynamoDBStore(Core):
    """Synchronous store on a DynamoDB table (see the module docstring for the model).

    Options: ``region``, ``endpoint_url``, ``timeout`` (per operation, 0.5 s),
    ``connect_timeout``/``read_timeout`` (botocore's socket timeouts, default ``timeout``),
    ``max_retries`` (conditional-write attempts, 64), ``max_pool_connections`` (50), or an
    existing client as ``client=`` (``boto3.client("dynamodb")`` or botocore's; not closed by the
    store). Thread-safe.
    """

    def __init__(self, table: str, *, client: Any = None, **options: Any) -> None:
        super().__init__(table, **options)
        self._owns_client = client is None
        if client is None:
            from botocore.config import Config

            with _sessions:
                client = _session("botocore").create_client(
                    "dynamodb", config=Config(**self.config_options()), **self.client_options()
                )
        self._client = client
        self._pool = ThreadPoolExecutor(self.max_pool_connections, "ratekeeper-dynamodb")
        self._guard = threading.Lock()
        self._turns = Turns()
        self._locks: Locks[threading.Lock] = Locks(threading.Lock)  # under _guard
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DynamoDBStore:
        """A store for ``dynamodb://REGION/TABLE`` (options as query parameters, e.g.
        ``?endpoint_url=http://127.0.0.1:8000``); keyword ``options`` win over the URL's."""
        return cls(**split_url(url, options))

    def _run(self, plan: Plan[T], budget: float | None = None, hold: Sequence[str] = ()) -> T:
        """Run a plan that is no call on a key (a ping, a read, the table's creation, a
        transaction: holding this process's turns on the items ``hold``)."""
        if self._closed:
            raise StoreUnavailable("dynamodb store is closed")
        give_up = _clock() + (budget or self.timeout)
        try:
            with self._hold(hold, give_up):
                return drive(plan, functools.partial(self._step, give_up))
        finally:
            plan.close()

    @contextlib.contextmanager
    def _hold(self, pks: Sequence[str], give_up: float) -> Iterator[None]:
        """This process's turns on the items ``pks`` (in that order), waited for until
        ``give_up``."""
        taken: list[tuple[str, threading.Lock | None]] = []
        try:
            for pk in pks:
                with self._guard:
                    lock = self._locks.take(pk)
                got = lock.acquire(timeout=max(give_up - _clock(), 0.0))
                taken.append((pk, lock if got else None))
                if not got:
                    raise late(self.timeout)
            yield
        finally:
            for pk, held in reversed(taken):
                if held is not None:
                    held.release()
                with self._guard:
                    self._locks.drop(pk)

    def _submit(self, key: str, change: Change) -> Any:
        """Apply ``change`` to the item of ``key``: lead a batch, or wait for a leader's answer
        (see :class:`~ratekeeper.stores.dynamodb._core.Turns`), all within ``timeout``."""
        if self._closed:
            raise StoreUnavailable("dynamodb store is closed")
        give_up = _clock() + self.timeout
        me = Waiting(change, Future())
        with self._guard:
            leading = self._turns.join(key, me)
        batch = [me]
        if not leading:
            try:
                got = me.future.result(max(give_up - _clock(), 0.0))
            except FutureTimeout:
                with self._guard:
                    if me.future.cancel() or not me.future.done():  # gave up, or batch running
                        raise late(self.timeout) from None
                got = me.future.result()
                if isinstance(got, Lead):  # appointed too late to lead: the next one leads
                    self._hand_off(key, got.batch[1:])
                    raise late(self.timeout) from None
            if not isinstance(got, Lead):
                return got
            batch = got.batch
        plan = self.plan_update(key, combine([w.change for w in batch]))
        try:
            answers = drive(plan, functools.partial(self._step, give_up))
        except BaseException as exc:
            for w in batch[1:]:
                w.future.set_exception(_again(exc))
            raise
        finally:
            plan.close()
            self._hand_off(key, [])
        for w, answer in zip(batch[1:], answers[1:], strict=True):
            w.future.set_result(answer)
        return answers[0]

    def _hand_off(self, key: str, batch: list[Waiting]) -> None:
        """Appoint the first live call of ``batch`` (else of the key's queue) to lead it."""
        with self._guard:
            while True:
                if not batch:
                    batch = self._turns.next(key)
                    if not batch:
                        return
                # claimed calls can no longer give up before their answer (only stop waiting)
                batch = [w for w in batch if w.future.set_running_or_notify_cancel()]
                if batch:
                    batch[0].future.set_result(Lead(batch))
                    return

    def _step(self, give_up: float, step: Step) -> Any:
        remaining = give_up - _clock()
        if isinstance(step, Pause):
            if step.seconds >= remaining:
                raise late(self.timeout)
            time.sleep(step.seconds)
            return None
        if remaining <= 0:
            raise late(self.timeout)
        try:
            future: Future[Any] = self._pool.submit(self._send, step)
        except RuntimeError:  # the pool was shut down: closed meanwhile
            raise StoreUnavailable("dynamodb store is closed") from None
        try:
            return future.result(remaining)
        except FutureTimeout:
            future.cancel()
            raise late(self.timeout) from None

    def _send(self, step: Call) -> Any:
        try:
            return getattr(self._client, step.op)(**step.params)
        except Exception as exc:
            return outcome(exc)

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        decision: Decision = self._submit(key, self.change_decide(rule, cost, now, True))
        return decision

    def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        decision: Decision = self._submit(key, self.change_decide(rule, cost, now, False))
        return decision

    def reset(self, key: str, rule: Rule) -> None:
        self._submit(key, self.change_reset(rule))

    def acquire_lease(self, key: str, lease_id: str, limit: int, ttl: float, now: float) -> float:
        wait: float = self._submit(key, self.change_acquire(lease_id, limit, ttl, now))
        return wait

    def release_lease(self, key: str, lease_id: str, now: float) -> None:
        self._submit(key, self.change_release(lease_id, now))

    def apply_checks(self, checks: Sequence[Check], now: float, write: bool = True) -> Applied:
        """Several checks, all-or-nothing: on one key, one conditional write in that key's turn
        (batched with its hits); on several, one transaction (`Core.plan_checks`) in this
        process's turns on their items."""
        key = one_key(checks)
        if key is not None:
            applied: Applied = self._submit(key, self.change_checks(checks, now, write))
            return applied
        return self._run(
            self.plan_checks(checks, now, write), hold=items_of(checks) if write else ()
        )

    def ping(self) -> None:
        self._run(self.plan_ping())

    def get_raw(self, key: str) -> dict[str, Any] | None:
        """The stored item of ``key`` (DynamoDB's typed attribute values)."""
        return self._run(self.plan_raw(key))

    def create_table(self) -> list[str]:
        """Create the table and turn its TTL on, each only when missing (``ratekeeper migrate``);
        returns what was done, empty when nothing."""
        return self._run(create_table(self.table), MIGRATE_SECONDS)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._cache.clear()
        if self._owns_client:
            self._client.close()


class AsyncDynamoDBStore(Core):
    """The asyncio twin of :class:`DynamoDBStore` (aiobotocore), the same options; an existing
    aiobotocore client may be passed as ``client=`` (entered, and not closed by the store).

    The client belongs to the event loop that opened it. The store may be used from several
    loops one after the other (``asyncio.run`` per request): the first call in a new loop opens
    a client there, and the old loop's shutdown closes the old one.
    """

    def __init__(self, table: str, *, client: Any = None, **options: Any) -> None:
        super().__init__(table, **options)
        self._client: Any = client
        self._owns_client = client is None
        if client is None:
            with _sessions:
                _session("aiobotocore")
        self._opening: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the client
        self._hook: Any = None  # closes the client when that loop shuts down
        self._turns = Turns()
        self._locks: Locks[asyncio.Lock] = Locks(asyncio.Lock)
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncDynamoDBStore:
        return cls(**split_url(url, options))

    # -- the client ------------------------------------------------------------------------------

    async def _open(self) -> Any:
        from aiobotocore.config import AioConfig

        with _sessions:
            context = _session("aiobotocore").create_client(
                "dynamodb", config=AioConfig(**self.config_options()), **self.client_options()
            )
        return await context.__aenter__()

    async def _get_client(self) -> Any:
        if self._closed:
            raise StoreUnavailable("dynamodb store is closed")
        if not self._owns_client:
            return self._client
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            await self._enter_loop(loop)
        if self._client is None:
            task = self._opening
            if task is None or task.done():
                task = self._opening = asyncio.ensure_future(self._open())
            self._client = await asyncio.shield(task)
        return self._client

    async def _enter_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The running loop is not the client's: forget the old loop's client (that loop closes
        it as it shuts down, see :func:`_until_shutdown`) and arm the same hook here."""
        self._client = self._opening = None
        self._turns = Turns()
        self._locks = Locks(asyncio.Lock)
        self._loop = loop
        hook = _until_shutdown(weakref.ref(self), loop)
        await hook.__anext__()
        self._hook = hook  # kept alive: finalized by the loop's shutdown

    async def _leave_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            return
        client, self._client, self._opening, self._loop = self._client, None, None, None
        if client is not None and self._owns_client:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), self.timeout)

    # -- running a plan --------------------------------------------------------------------------

    async def _run(self, plan: Plan[T], budget: float | None = None, hold: Sequence[str] = ()) -> T:
        """:meth:`DynamoDBStore._run`."""
        budget = budget or self.timeout
        try:
            async with asyncio.timeout(budget):
                client = await self._get_client()
                async with self._hold(hold):
                    return await drive_async(plan, functools.partial(self._step, client))
        except TimeoutError:
            raise late(budget) from None
        finally:
            plan.close()

    @contextlib.asynccontextmanager
    async def _hold(self, pks: Sequence[str]) -> AsyncIterator[None]:
        """:meth:`DynamoDBStore._hold` (the caller's ``asyncio.timeout`` bounds the wait)."""
        locks = self._locks
        taken: list[tuple[str, asyncio.Lock | None]] = []
        try:
            for pk in pks:
                lock = locks.take(pk)
                taken.append((pk, None))
                await lock.acquire()
                taken[-1] = (pk, lock)
            yield
        finally:
            for pk, held in reversed(taken):
                if held is not None:
                    held.release()
                locks.drop(pk)

    async def _submit(self, key: str, change: Change) -> Any:
        """:meth:`DynamoDBStore._submit`: lead a batch or wait for a leader's answer."""
        me = Waiting(change, asyncio.get_running_loop().create_future())
        led = False
        try:
            async with asyncio.timeout(self.timeout):
                client = await self._get_client()
                batch = [me]
                if not self._turns.join(key, me):
                    got = await me.future
                    if not isinstance(got, Lead):
                        return got
                    batch = got.batch
                led = True
                plan = self.plan_update(key, combine([w.change for w in batch]))
                try:
                    answers = await drive_async(plan, functools.partial(self._step, client))
                except BaseException as exc:
                    for w in batch[1:]:
                        if not w.future.done():
                            w.future.set_exception(_again(exc))
                    raise
                finally:
                    plan.close()
                    self._hand_off(key, [])
                for w, answer in zip(batch[1:], answers[1:], strict=True):
                    if not w.future.done():
                        w.future.set_result(answer)
                return answers[0]
        except TimeoutError:
            future = me.future
            if not led and future.done() and not future.cancelled():
                got = future.result() if future.exception() is None else None
                if isinstance(got, Lead):  # appointed as the deadline passed: the next one leads
                    self._hand_off(key, got.batch[1:])
            raise late(self.timeout) from None

    def _hand_off(self, key: str, batch: list[Waiting]) -> None:
        """Appoint the first live call of ``batch`` (else of the key's queue) to lead it."""
        while True:
            if not batch:
                batch = self._turns.next(key)
                if not batch:
                    return
            batch = [w for w in batch if not w.future.done()]
            if batch:
                batch[0].future.set_result(Lead(batch))
                return

    @staticmethod
    async def _step(client: Any, step: Step) -> Any:
        if isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
            return None
        try:
            return await getattr(client, step.op)(**step.params)
        except Exception as exc:
            return outcome(exc)

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        decision: Decision = await self._submit(key, self.change_decide(rule, cost, now, True))
        return decision

    async def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        decision: Decision = await self._submit(key, self.change_decide(rule, cost, now, False))
        return decision

    async def reset(self, key: str, rule: Rule) -> None:
        await self._submit(key, self.change_reset(rule))

    async def acquire_lease(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float
    ) -> float:
        wait: float = await self._submit(key, self.change_acquire(lease_id, limit, ttl, now))
        return wait

    async def release_lease(self, key: str, lease_id: str, now: float) -> None:
        await self._submit(key, self.change_release(lease_id, now))

    async def apply_checks(
        self, checks: Sequence[Check], now: float, write: bool = True
    ) -> Applied:
        """:meth:`DynamoDBStore.apply_checks`."""
        key = one_key(checks)
        if key is not None:
            applied: Applied = await self._submit(key, self.change_checks(checks, now, write))
            return applied
        plan = self.plan_checks(checks, now, write)
        return await self._run(plan, hold=items_of(checks) if write else ())

    async def ping(self) -> None:
        await self._run(self.plan_ping())

    async def get_raw(self, key: str) -> dict[str, Any] | None:
        """The stored item of ``key`` (DynamoDB's typed attribute values)."""
        return await self._run(self.plan_raw(key))

    async def create_table(self) -> list[str]:
        """:meth:`DynamoDBStore.create_table`."""
        return await self._run(create_table(self.table), MIGRATE_SECONDS)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cache.clear()
        task, self._opening = self._opening, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        mine = self._loop is asyncio.get_running_loop()
        client, self._client, self._loop = self._client, None, None
        if client is not None and self._owns_client and mine:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), self.timeout)


def _again(exc: BaseException) -> BaseException:
    """The error a batch's leader met, for each of the calls it led (a fresh exception each)."""
    if isinstance(exc, StoreUnavailable):
        return StoreUnavailable(str(exc))
    if isinstance(exc, asyncio.CancelledError | TimeoutError):
        return StoreUnavailable("dynamodb unavailable: the call leading this key's batch gave up")
    return exc


async def _until_shutdown(
    ref: weakref.ref[AsyncDynamoDBStore], loop: asyncio.AbstractEventLoop
) -> AsyncIterator[None]:
    """An async generator that the loop finalizes when it shuts down (``asyncio.run`` and
    ``asyncio.Runner`` do, before closing it): the moment to close the client it opened."""
    try:
        yield
    finally:
        store = ref()
        if store is not None:
            await store._leave_loop(loop)
