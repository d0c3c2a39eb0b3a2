"""The Lua scripts that make key admission atomic in Redis (run by EVALSHA).

Redis runs a script alone: no other command, from any replica, runs between its reads and its
writes, so a check and the reservation it allows cannot be split by a concurrent request (no
read-modify-write race, no lock, no WATCH retry loop). Both scripts read the clock with Redis's
own ``TIME``, so the replicas' clocks never matter. Numbers cross the Lua boundary as strings
(a Lua number returned to Redis is truncated to an integer).

Per client key, two Redis keys (one hash slot, by the ``{id}`` tag, so a cluster can run them):

``<prefix>key:{<id>}``            a hash: ``spent`` (USD, seeded from the database with HSETNX),
                                  ``typical`` (running mean cost, alpha 0.2), ``tokens`` and
                                  ``ts`` (the rate-limit bucket and when it was last filled, ms)
``<prefix>key:{<id>}:inflight``   a sorted set: one member per admitted, unsettled request,
                                  scored by the time (ms) after which it no longer counts
"""

from __future__ import annotations

#: KEYS: hash, in-flight set. ARGV: spent seed, budget ('' for none), rpm (0 for none),
#: reservation id, reservation lifetime (ms), idle expiry of both keys (s).
#: Returns ``{1}`` admitted, ``{0, spent, in_flight, typical}`` over budget,
#: ``{2, wait_ms}`` rate limited. Nothing is written unless the request is admitted (but the
#: seed and the pruning of expired reservations).
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSETNX', KEYS[1], 'spent', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if ARGV[2] ~= '' then
  local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
  local n = redis.call('ZCARD', KEYS[2])
  local typical = tonumber(redis.call('HGET', KEYS[1], 'typical') or '0')
  if spent + n * typical >= tonumber(ARGV[2]) then
    return {0, tostring(spent), n, tostring(typical)}
  end
end
local rpm = tonumber(ARGV[3])
if rpm > 0 then
  local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or ARGV[3])
  local ts = tonumber(redis.call('HGET', KEYS[1], 'ts') or now)
  tokens = math.min(rpm, tokens + math.max(0, now - ts) * rpm / 60000)
  if tokens < 1 then
    return {2, tostring((1 - tokens) * 60000 / rpm)}
  end
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens - 1), 'ts', now)
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1}
"""

#: KEYS: hash, in-flight set. ARGV: reservation id, cost (USD), spent seed (the spend before
#: this cost, for a hash Redis lost), idle expiry (s). Releases the reservation (if it has
#: not expired already: the cost counts either way) and adds the cost to ``spent`` and
#: ``typical``. Returns 1.
SETTLE = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSETNX', KEYS[1], 'spent', ARGV[3])
local cost = tonumber(ARGV[2])
if cost > 0 then
  redis.call('HINCRBYFLOAT', KEYS[1], 'spent', ARGV[2])
  local typical = redis.call('HGET', KEYS[1], 'typical')
  if typical then
    typical = 0.8 * tonumber(typical) + 0.2 * cost
  else
    typical = cost
  end
  redis.call('HSET', KEYS[1], 'typical', string.format('%.17g', typical))
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

#: KEYS: a conversation's step key. ARGV: step, idle expiry (ms). Keeps the higher of the
#: stored and the given step (a cascade conversation escalates, never back down) and restarts
#: the expiry. Returns 1.
RAISE = """
local now = tonumber(redis.call('GET', KEYS[1]) or '-1') or -1
if tonumber(ARGV[1]) > now then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""
