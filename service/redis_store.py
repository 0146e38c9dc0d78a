"""The Redis state store: the same records as the memory store, shared by several replicas.

Keys: ``<prefix>:s:<model>:<agent_id>`` hold one state record (``service.state``) with a Redis TTL;
``<prefix>:idx:<model>`` is a sorted set of agent ids scored by the Redis server time of their last write,
used for capacity eviction and the tracked-agents count.

A request is one ``MGET`` (load) and one Lua script call (commit). The script checks that every key still
holds the version that was loaded, then writes all records, refreshes their TTL and evicts beyond
``max_agents``, atomically: a replica that lost a race writes nothing and retries from fresh state.

``<prefix>:scoring`` is the scoring log (``service.scoring_log``): a stream that the commit script appends
the request's scoring entry to in the same atomic step, so its order is the commit order of every replica;
entries older than the retention are trimmed as new ones arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.errors import StoreUnavailable
from service.state import VERSION_OFFSET, VERSION_SIZE
from service.store import StateKey, StoreEvents, Write

# One atomic commit of a request's writes. Per-write values travel in a few blobs rather than as arguments
# of their own: redis-py packs every argument in Python, and a 200-agent A/B frame had 2,400 of them.
# KEYS: n state keys, then the index key of each of the m models written, then the scoring log stream.
# ARGV: n, m, ttl_ms, max_agents;
#       expected versions (n x VERSION_SIZE bytes, all zero = the key must be absent);
#       records (concatenated) and their end offsets (n x uint32 LE);
#       agent ids (concatenated) and their end offsets (n x uint32 LE);
#       the model of each write (n bytes: 1..m);
#       the scoring log entry ("" = none), the log's retention in ms;
#       then the state-key prefix of each model (for deleting evicted agents).
# Returns {0, i} on a version conflict at key i, else {1, idx1, ttl1, cap1, count1, idx2, ...}.
_COMMIT_LUA = f"""
local n = tonumber(ARGV[1])
local m = tonumber(ARGV[2])
local ttl_ms = tonumber(ARGV[3])
local max_agents = tonumber(ARGV[4])
local expected, records, record_ends = ARGV[5], ARGV[6], ARGV[7]
local agents, agent_ends, models = ARGV[8], ARGV[9], ARGV[10]
local absent = string.rep('\\0', {VERSION_SIZE})
for i = 1, n do
  local want = string.sub(expected, (i - 1) * {VERSION_SIZE} + 1, i * {VERSION_SIZE})
  local cur = redis.call('GET', KEYS[i])
  if want == absent then
    if cur then return {{0, i}} end
  elseif (not cur) or string.sub(cur, {VERSION_OFFSET + 1}, {VERSION_OFFSET + VERSION_SIZE}) ~= want then
    return {{0, i}}
  end
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r0, a0 = 1, 1
for i = 1, n do
  local r1 = struct.unpack('<I4', record_ends, 4 * i - 3)
  local a1 = struct.unpack('<I4', agent_ends, 4 * i - 3)
  redis.call('SET', KEYS[i], string.sub(records, r0, r1), 'PX', ttl_ms)
  redis.call('ZADD', KEYS[n + string.byte(models, i)], now_ms, string.sub(agents, a0, a1))
  r0, a0 = r1 + 1, a1 + 1
end
local entry = ARGV[11]
if entry ~= '' then
  local oldest = now_ms - tonumber(ARGV[12])
  redis.call('XADD', KEYS[n + m + 1], 'MINID', '~', tostring(oldest), '*', 'e', entry)
end
local out = {{1}}
for j = 1, m do
  local idx = KEYS[n + j]
  -- members whose state key Redis already expired
  local expired = redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. (now_ms - ttl_ms))
  local over = redis.call('ZCARD', idx) - max_agents
  local evicted = 0
  if over > 0 then
    local popped = redis.call('ZPOPMIN', idx, over)
    for k = 1, #popped, 2 do
      redis.call('DEL', ARGV[12 + j] .. popped[k])
      evicted = evicted + 1
    end
  end
  table.insert(out, idx)
  table.insert(out, expired)
  table.insert(out, evicted)
  table.insert(out, redis.call('ZCARD', idx))
end
return out
"""

# KEYS: index keys of every model. ARGV: ttl_ms. Returns {expired1, count1, expired2, count2, ...}.
_SWEEP_LUA = """
local ttl_ms = tonumber(ARGV[1])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS do
  table.insert(out, redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. (now_ms - ttl_ms)))
  table.insert(out, redis.call('ZCARD', KEYS[i]))
end
return out
"""


def _redact(url: str) -> str:
    """``url`` with its password (``user:secret@`` or ``?password=secret``) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(
        "password=***" if q.split("=", 1)[0] == "password" else q for q in parts.query.split("&")
    )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class RedisStore:
    """State records in Redis (``redis.asyncio``); see the module docstring."""

    #: the scoring log lives in the store, shared by every replica (``service.scoring_log``)
    shared = True

    def __init__(
        self,
        url: str,
        prefix: str,
        ttl_s: float,
        max_agents: int,
        models: Sequence[str],
        events: StoreEvents,
        log_retention_s: float = 30.0,
    ) -> None:
        self.url = url
        # what messages and logs show: the URL without its password (redis://user:secret@host)
        self.safe_url = _redact(url)
        self.prefix = prefix
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.max_agents = max_agents
        self.log_retention_ms = max(1, round(log_retention_s * 1000))
        self.models = list(models)
        self.events = events
        self._redis: aioredis.Redis | None = None
        self._commit: Any = None
        self._sweep: Any = None

    def state_prefix(self, model: str) -> str:
        return f"{self.prefix}:s:{model}:"

    def key(self, model: str, agent: str) -> str:
        return self.state_prefix(model) + agent

    def index_key(self, model: str) -> str:
        return f"{self.prefix}:idx:{model}"

    @property
    def log_key(self) -> str:
        return f"{self.prefix}:scoring"

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise StoreUnavailable("the Redis store is not open")
        return self._redis

    async def open(self) -> None:
        self._redis = aioredis.Redis.from_url(self.url, decode_responses=False, health_check_interval=30)
        self._commit = self._redis.register_script(_COMMIT_LUA)
        self._sweep = self._redis.register_script(_SWEEP_LUA)
        await self.ping()

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except RedisError as e:
            raise StoreUnavailable(f"Redis at {self.safe_url} is unreachable: {e}") from e

    async def load(self, keys: Sequence[StateKey]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            values = await self.redis.mget([self.key(m, a) for m, a in keys])
        except RedisError as e:
            raise StoreUnavailable(f"Redis load failed: {e}") from e
        return [v if isinstance(v, bytes) or v is None else str(v).encode() for v in values]

    async def commit(self, writes: Sequence[Write], log_entry: bytes | None = None) -> bool:
        if not writes:
            return True
        models = list(dict.fromkeys(w.key[0] for w in writes))
        slot = {model: j + 1 for j, model in enumerate(models)}
        keys = [self.key(*w.key) for w in writes] + [self.index_key(m) for m in models] + [self.log_key]
        records = [w.record for w in writes]
        agents = [w.key[1].encode() for w in writes]
        args: list[Any] = [
            len(writes),
            len(models),
            self.ttl_ms,
            self.max_agents,
            b"".join(w.expected.to_bytes(VERSION_SIZE, "little") for w in writes),
            b"".join(records),
            np.cumsum([len(r) for r in records], dtype="<u4").tobytes(),
            b"".join(agents),
            np.cumsum([len(a) for a in agents], dtype="<u4").tobytes(),
            bytes(slot[w.key[0]] for w in writes),
            log_entry or b"",
            self.log_retention_ms,
            *(self.state_prefix(m) for m in models),
        ]
        try:
            out = await self._commit(keys=keys, args=args)
        except RedisError as e:
            raise StoreUnavailable(f"Redis commit failed: {e}") from e
        if int(out[0]) == 0:
            return False
        self._report(out[1:], with_capacity=True)
        return True

    def _report(self, flat: list[Any], with_capacity: bool) -> None:
        step = 4 if with_capacity else 3
        for i in range(0, len(flat), step):
            idx = flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])
            model = idx.rsplit(":", 1)[1]
            expired = int(flat[i + 1])
            if expired:
                self.events.evicted(model, "ttl", expired)
            if with_capacity and int(flat[i + 2]):
                self.events.evicted(model, "capacity", int(flat[i + 2]))
            self.events.tracked(model, int(flat[i + step - 1]))

    async def delete(self, agent_id: str, models: Sequence[str], log_entry: bytes | None = None) -> list[str]:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for m in models:
                    pipe.delete(self.key(m, agent_id))
                    pipe.zrem(self.index_key(m), agent_id)
                for m in models:
                    pipe.zcard(self.index_key(m))
                if log_entry:  # in the same transaction: ordered with every commit in the log
                    pipe.xadd(self.log_key, {"e": log_entry})
                res = await pipe.execute()
        except RedisError as e:
            raise StoreUnavailable(f"Redis delete failed: {e}") from e
        deleted = [m for i, m in enumerate(models) if int(res[2 * i])]
        for i, m in enumerate(models):
            self.events.tracked(m, int(res[2 * len(models) + i]))
        return deleted

    async def read_log(self, after: str, count: int, block_ms: int | None) -> list[tuple[str, bytes]]:
        """Up to ``count`` scoring log entries after id ``after``, waiting up to ``block_ms`` for one
        (``None``: not at all)."""
        try:
            out: Any = await self.redis.xread({self.log_key: after}, count=count, block=block_ms)
        except RedisError as e:
            raise StoreUnavailable(f"Redis scoring log read failed: {e}") from e
        entries: list[tuple[str, bytes]] = []
        for _, items in out or ():
            for stream_id, fields in items:
                sid = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
                entries.append((sid, fields.get(b"e", b"")))
        return entries

    async def log_tail(self) -> str | None:
        """The id of the newest scoring log entry (None: the log is empty)."""
        try:
            out: Any = await self.redis.xrevrange(self.log_key, count=1)
        except RedisError as e:
            raise StoreUnavailable(f"Redis scoring log read failed: {e}") from e
        if not out:
            return None
        sid = out[0][0]
        return sid.decode() if isinstance(sid, bytes) else str(sid)

    async def sweep(self) -> None:
        """Drop index members whose records Redis expired; refresh the tracked counts."""
        keys = [self.index_key(m) for m in self.models]
        try:
            out = await self._sweep(keys=keys, args=[self.ttl_ms])
        except RedisError as e:
            raise StoreUnavailable(f"Redis sweep failed: {e}") from e
        flat: list[Any] = []
        for i, k in enumerate(keys):
            flat += [k, out[2 * i], out[2 * i + 1]]
        self._report(flat, with_capacity=False)
