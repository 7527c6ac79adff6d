"""Redis: priority through sub-queues, depth by LLEN.

kombu's Redis transport keeps one list per priority step for each queue
(steps 0, 3, 6, 9 by default) and pops them in step order, so **0 is the
highest priority on Redis** and a message sent without a priority lands in
step 0. Messages a worker has taken but not acknowledged sit in one
``unacked`` hash for all queues until acked, or until the visibility
timeout restores them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from taskdeck.brokers import MessageWindow, QueueDepth, RawMessage, SearchWindows

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis
    from kombu import Connection

#: Unacked entries read per sample at most: the hash is bounded by prefetch x
#: worker processes, so this only caps the cost of a pathological backlog.
UNACKED_SCAN_LIMIT = 100_000

#: kombu's default visibility timeout (seconds), when broker_transport_options has none.
VISIBILITY_TIMEOUT = 3600

#: kombu's default priority steps; the lanes use the first ones.
DEFAULT_STEPS = (0, 3, 6, 9)

#: Keys examined per discovery at most (SCAN calls of 1,000): a Redis shared
#: with a cache of millions of keys is not walked whole every sample.
DISCOVERY_SCAN_LIMIT = 50_000

#: Celery's own exchanges and queues (events, remote control and its replies): never task queues.
INTERNAL_EXCHANGES = frozenset({"celeryev", "celery.pidbox", "reply.celery.pidbox"})

#: Take one exact list item off KEYS[1] (LREM from the tail: the oldest copy)
#: and, for a move, push ARGV[2] onto KEYS[2] in the same step. Redis runs a
#: script alone: a worker's BRPOP either took the item before (0 removed,
#: nothing pushed) or finds it gone after; it is never both moved and popped.
REMOVE_SCRIPT = """
local removed = redis.call('LREM', KEYS[1], -1, ARGV[1])
if removed == 1 and #KEYS == 2 then
    redis.call('LPUSH', KEYS[2], ARGV[2])
end
return removed
"""

#: A page of each sub-queue KEYS[i], oldest first, from position ARGV[1] (0 = the tail), ARGV[2]
#: messages at most, and about ARGV[3] bytes in all: LRANGE in chunks sized by the largest message
#: seen (the first chunk is one message), so the script holds the budget and one message at most,
#: never a page of 10 MiB messages. Returns, per key, its length, 1 when the page stopped at the
#: budget (0 otherwise) and the messages. Beyond its first message, a page takes one only while it
#: fits; the first of each sub-queue is always taken, so paging moves on.
PAGE_SCRIPT = """
local offset, limit, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local used, out = 0, {}
for k = 1, #KEYS do
  local key, items, largest, cut = KEYS[k], {}, 0, 0
  local total = redis.call('LLEN', key)
  while #items < limit and offset + #items < total and cut == 0 do
    local at, want = offset + #items, 1
    if largest > 0 then want = math.max(1, math.floor((budget - used) / largest)) end
    want = math.min(want, limit - #items)
    local chunk = redis.call('LRANGE', key, -(at + want), -(at + 1))
    for i = #chunk, 1, -1 do
      local size = string.len(chunk[i])
      if #items > 0 and used + size > budget then
        cut = 1
        break
      end
      items[#items + 1] = chunk[i]
      used = used + size
      largest = math.max(largest, size)
    end
    if #chunk < want then break end
  end
  out[#out + 1] = total
  out[#out + 1] = cut
  out[#out + 1] = items
end
return out
"""


class RedisBroker:
    name = "redis"
    # queue_order_strategy "priority" makes a worker prefer the queues it lists first.
    one_lane_queue = False

    def lane_priority(self, rank: int) -> int:
        return DEFAULT_STEPS[min(rank, len(DEFAULT_STEPS) - 1)]

    def queue_arguments(self) -> dict[str, object]:
        return {}  # priority needs no declaration on Redis

    def redelivery_at(self, reserved: float, worker_gone: float, options: dict[str, object]) -> float | None:
        # kombu restores an unacked message once visibility_timeout seconds have passed
        # since it was reserved, whether or not its worker lives (a consumer's periodic
        # sweep puts it back on its queue: up to ~100 s later with kombu's defaults).
        timeout = options.get("visibility_timeout", VISIBILITY_TIMEOUT)
        return reserved + float(timeout if isinstance(timeout, int | float) else VISIBILITY_TIMEOUT)

    def queue_depths(self, conn: Connection, queues: list[str]) -> list[QueueDepth]:
        channel: Any = conn.default_channel  # kombu's Redis Channel
        client = channel.client
        steps = list(channel.priority_steps)
        # kombu's client adds global_keyprefix to LLEN and HLEN itself.
        with client.pipeline() as pipe:
            for queue in queues:
                for step in steps:
                    pipe.llen(channel._q_for_pri(queue, step))
            pipe.hlen(channel.unacked_key)
            replies = pipe.execute()
        unacked_total = replies[-1]
        depths = []
        per_queue = len(steps)
        for index, queue in enumerate(queues):
            chunk = replies[index * per_queue : (index + 1) * per_queue]
            by_priority = dict(zip(steps, chunk, strict=True))
            depths.append(
                QueueDepth(
                    name=queue,
                    ready=sum(by_priority.values()),
                    by_priority=by_priority,
                    # Redis keeps one unacked hash for every queue: report it once.
                    unacked=unacked_total if index == 0 else None,
                )
            )
        return depths

    def unacked_by_queue(
        self, conn: Connection, queues: list[str], management_url: str | None = None
    ) -> dict[str, int] | None:
        """Count the ``unacked`` hash by routing key (each entry is ``[message, exchange, key]``)."""
        channel: Any = conn.default_channel  # kombu's Redis Channel
        counts = dict.fromkeys(queues, 0)
        # HSCAN and LINDEX are not among the commands kombu's client prefixes.
        key = (channel.global_keyprefix or "") + channel.unacked_key
        for n, (_, raw) in enumerate(channel.client.hscan_iter(key, count=1000)):
            if n >= UNACKED_SCAN_LIMIT:
                break
            try:
                _, _, routing_key = json.loads(raw)
            except (TypeError, ValueError):
                continue
            if isinstance(routing_key, bytes):
                routing_key = routing_key.decode()
            if routing_key in counts:
                counts[routing_key] += 1
        return counts

    def oldest_task_ids(self, conn: Connection, queues: list[str]) -> dict[str, list[str]]:
        """The message at the tail of each sub-queue (kombu LPUSHes and BRPOPs: the tail is oldest)."""
        channel: Any = conn.default_channel  # kombu's Redis Channel
        steps = list(channel.priority_steps)
        with channel.client.pipeline() as pipe:
            for queue in queues:
                for step in steps:
                    pipe.lindex((channel.global_keyprefix or "") + channel._q_for_pri(queue, step), -1)
            replies = pipe.execute()
        out: dict[str, list[str]] = {}
        for index, queue in enumerate(queues):
            for raw in replies[index * len(steps) : (index + 1) * len(steps)]:
                task_id = _task_id(raw)
                if task_id:
                    out.setdefault(queue, []).append(task_id)
        return out

    def discover_queues(self, conn: Connection) -> list[str]:
        """Queues named in kombu's binding tables (``_kombu.binding.<exchange>``), and list keys.

        A queue a producer published to is in a binding table (kombu declares
        it on publish); a list pushed by anything else is found by SCAN, up to
        :data:`DISCOVERY_SCAN_LIMIT` keys. Celery's event and remote-control
        queues are left out.
        """
        channel: Any = conn.default_channel
        client, prefix, sep = _plain(channel), channel.global_keyprefix or "", channel.sep
        names = self.bound_queues(conn)
        for key in _scan(client, f"{_glob(prefix)}*", "list"):
            name = key[len(prefix) :]
            base, _, step = name.rpartition(sep)
            names.add(base if base and step.isdigit() else name)
        return sorted(n for n in names if n and not _internal_queue(n))

    def bound_queues(self, conn: Connection) -> set[str]:
        """Queues named in kombu's binding tables (``_kombu.binding.<exchange>``), Celery's own left out."""
        channel: Any = conn.default_channel
        client, prefix, sep = _plain(channel), channel.global_keyprefix or "", channel.sep
        names: set[str] = set()
        for key in _scan(client, f"{_glob(prefix)}_kombu.binding.*", "set"):
            exchange = key[len(prefix) + len("_kombu.binding.") :]
            if exchange in INTERNAL_EXCHANGES:
                continue
            for member in client.smembers(key):
                names.add(_text(member).split(sep)[-1])
        return {n for n in names if n and not _internal_queue(n)}

    def browse(
        self,
        conn: Connection,
        queue: str,
        priority: int | None,
        offset: int,
        limit: int,
        max_bytes: int | None = None,
    ) -> list[MessageWindow]:
        """Windows from the tail of each sub-queue (kombu LPUSHes and BRPOPs: the tail is oldest).

        Each window and its total are read at one moment (a transaction, or
        :data:`PAGE_SCRIPT` with ``max_bytes``).
        """
        channel: Any = conn.default_channel
        steps = [channel.priority(priority)] if priority is not None else list(channel.priority_steps)
        client = _plain(channel)
        keys = [_key(channel, queue, step) for step in steps]
        if max_bytes is None:
            with client.pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.llen(key)
                    pipe.lrange(key, -(offset + limit), -(offset + 1))
                replies = [(total, 0, list(reversed(items))) for total, items in _pairs(pipe.execute())]
        else:
            page = client.register_script(PAGE_SCRIPT)
            flat = page(keys=keys, args=[offset, limit, max_bytes])
            replies = [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
        windows = []
        for step, (total, cut, oldest_first) in zip(steps, replies, strict=True):
            messages = [RawMessage(raw, step, offset + i) for i, raw in enumerate(oldest_first)]
            windows.append(MessageWindow(queue, step, total, messages, cut=bool(cut)))
        return windows

    def remove_message(
        self, conn: Connection, queue: str, match: Callable[[RawMessage], bool], to: str | None
    ) -> RawMessage | None:
        channel: Any = conn.default_channel
        client = _plain(channel)
        for step in channel.priority_steps:
            key = _key(channel, queue, step)
            search = SearchWindows()
            for start, count in search:
                items = client.lrange(key, -(start + count), -(start + 1))
                search.held(count, sum(len(item) for item in items))
                for i, item in enumerate(reversed(items)):
                    raw = item if isinstance(item, bytes) else item.encode()
                    found = RawMessage(raw, step, start + i)
                    if not match(found):
                        continue
                    keys = [key] if to is None else [key, _key(channel, to, step)]
                    args = [raw] if to is None else [raw, _readdressed(raw, to)]
                    removed = client.eval(REMOVE_SCRIPT, len(keys), *keys, *args)
                    return found if removed else None
                if len(items) < count:
                    break
        return None


def _plain(channel: Any) -> redis.Redis:
    """A client that prefixes nothing (kombu's prefixes some commands only): keys are prefixed by hand."""
    import redis

    return redis.Redis(connection_pool=channel.client.connection_pool)


def _pairs(replies: list[Any]) -> list[tuple[Any, Any]]:
    return [(replies[i], replies[i + 1]) for i in range(0, len(replies), 2)]


def _key(channel: Any, queue: str, step: int) -> str:
    return (channel.global_keyprefix or "") + channel._q_for_pri(queue, step)


def _glob(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]\\" else c for c in text)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _scan(client: redis.Redis, match: str, kind: str | None) -> list[str]:
    keys: list[str] = []
    cursor, examined = 0, 0
    while True:
        cursor, batch = client.scan(cursor, match=match, count=1000, _type=kind)
        keys.extend(_text(k) for k in batch)
        examined += 1000
        if not cursor or examined >= DISCOVERY_SCAN_LIMIT:
            return keys


def _internal_queue(name: str) -> bool:
    return name.endswith(".pidbox") or name.startswith("celeryev.")


def _readdressed(raw: bytes, queue: str) -> bytes:
    """The envelope with its delivery address set to ``queue`` (where kombu restores it to if unacked)."""
    try:
        envelope = json.loads(raw)
        envelope["properties"]["delivery_info"] = {"exchange": "", "routing_key": queue}
    except (TypeError, ValueError, KeyError):
        return raw  # not kombu's envelope: moved as it is (a worker will refuse it there too)
    return json.dumps(envelope).encode()


def _task_id(raw: bytes | str | None) -> str | None:
    if not raw:
        return None
    try:
        message = json.loads(raw)
    except (TypeError, ValueError):
        return None
    headers = message.get("headers") or {}
    return headers.get("id") or (message.get("properties") or {}).get("correlation_id")


def client_url(url: str) -> str:
    """A kombu Redis URL as redis-py takes it: ``redis+socket:///path`` becomes ``unix:///path``."""
    if url.startswith("redis+socket://"):
        return "unix://" + url.removeprefix("redis+socket://")
    return url
