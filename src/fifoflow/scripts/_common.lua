-- _common.lua: helpers prepended to every fifoflow script (not a script of its own).
--
-- Key names, all under the queue prefix P = "ff:{QUEUE}:" (one hash tag, one slot):
--   P.."job:"..ID    hash   the job record
--   P.."ready:"..POOL zset  claimable jobs; score = -priority, member = job id.
--                           Equal scores sort by member, and ids are fixed-width hex
--                           ranks, so ZPOPMIN gives highest priority, then FIFO.
--   P.."wake:"..POOL list   one token per job made claimable; idle workers BLPOP it
--   P.."pools"        set    pool names seen in this queue
--   P.."delayed"      zset   pushed with a delay; score = due time (s)
--   P.."retry"        zset   waiting for a retry; score = due time (s)
--   P.."running"      zset   claimed jobs; score = lease deadline (s)
--   P.."succeeded" / "dead" / "cancelled"  zset  finished jobs; score = finished_at
--   P.."keys"         hash   de-duplication key -> job id (while queued/delayed/running)
--   P.."seq"          string last rank handed out (microseconds, strictly increasing)
--   P.."hk"           string housekeeping gate (expires after 50 ms)
--   P.."meta"         hash   queue settings (max_length)

local WAKE_CAP = 1000

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt_time(t)
  return string.format('%.6f', t)
end

-- Put a job (back) at its place in line: its score is fixed by its priority and its
-- member by its id, so a retried, reaped or released job lands where it was.
local function enqueue_ready(P, id, pool, priority)
  redis.call('ZADD', P .. 'ready:' .. pool, -tonumber(priority), id)
  redis.call('HSET', P .. 'job:' .. id, 'status', 'queued')
  local wake = P .. 'wake:' .. pool
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, WAKE_CAP - 1)
end

-- Move due jobs from a due-time zset (delayed or retry) into their ready sets.
local function promote(P, zname, now, limit)
  local due = redis.call('ZRANGEBYSCORE', P .. zname, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', P .. zname, id)
    local f = redis.call('HMGET', P .. 'job:' .. id, 'pool', 'priority')
    if f[1] then
      enqueue_ready(P, id, f[1], f[2])
    end
  end
  return #due
end

-- Jobs whose lease expired go back to their place in line; their token is voided so
-- the lost worker can no longer ack or fail them.
local function reap(P, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', P .. 'running', '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(expired) do
    redis.call('ZREM', P .. 'running', id)
    local jk = P .. 'job:' .. id
    local f = redis.call('HMGET', jk, 'pool', 'priority')
    if f[1] then
      redis.call('HSET', jk, 'token', '', 'worker', '')
      redis.call('HINCRBY', jk, 'lost', 1)
      enqueue_ready(P, id, f[1], f[2])
    end
  end
  return #expired
end

-- Record a final status: the job leaves the dedupe index and expires after ttl.
-- `fields` are extra HSET field/value pairs written in the same call; `key` is the job's
-- de-duplication key (false if none), read by the caller's first HMGET.
local function finish(P, id, status, now, ttl, key, fields)
  local jk = P .. 'job:' .. id
  redis.call('HSET', jk, 'status', status, 'finished_at', fmt_time(now), 'token', '',
    unpack(fields or {}))
  redis.call('ZADD', P .. status, now, id)
  if key and key ~= '' and redis.call('HGET', P .. 'keys', key) == id then
    redis.call('HDEL', P .. 'keys', key)
  end
  if tonumber(ttl) > 0 then
    redis.call('EXPIRE', jk, ttl)
  end
end

-- Claim up to n jobs across the given pools: the best (highest priority, then oldest)
-- head among the pools' ready sets, n times. Returns a flat array, 6 fields a job:
-- id, token, target, params, timeout, attempts.
-- The fencing token is the job's claim count: unique per claim of that job, and voided
-- (token = '') whenever the job leaves `running` by any other door than this worker.
local function claim(P, worker, lease, n, pools, now)
  local out = {}
  local deadline = now + lease
  local started = fmt_time(now)
  for _ = 1, n do
    local best_pool, best_id, best_score = nil, nil, nil
    if #pools == 1 then
      -- One pool: its head is the best, popped in the same call.
      local head = redis.call('ZPOPMIN', P .. 'ready:' .. pools[1])
      if head[1] then best_id = head[1] end
    else
      for _, pool in ipairs(pools) do
        local head = redis.call('ZRANGE', P .. 'ready:' .. pool, 0, 0, 'WITHSCORES')
        if head[1] then
          local score = tonumber(head[2])
          if best_id == nil or score < best_score or (score == best_score and head[1] < best_id) then
            best_pool, best_id, best_score = pool, head[1], score
          end
        end
      end
      if best_id ~= nil then redis.call('ZREM', P .. 'ready:' .. best_pool, best_id) end
    end
    if best_id == nil then
      -- No lost wake-ups: with nothing ready in any served pool, stale tokens go, atomically,
      -- so any later push leaves a fresh token for a blocked worker.
      for _, pool in ipairs(pools) do
        redis.call('DEL', P .. 'wake:' .. pool)
      end
      break
    end
    local jk = P .. 'job:' .. best_id
    local f = redis.call('HMGET', jk, 'target', 'params', 'timeout', 'attempts', 'claims')
    local attempts = tostring((tonumber(f[4]) or 0) + 1)
    local token = tostring((tonumber(f[5]) or 0) + 1)
    redis.call('HSET', jk, 'status', 'running', 'started_at', started, 'worker', worker,
      'token', token, 'claims', token, 'attempts', attempts)
    redis.call('ZADD', P .. 'running', deadline, best_id)
    out[#out + 1] = best_id
    out[#out + 1] = token
    out[#out + 1] = f[1] or ''
    out[#out + 1] = f[2] or '{}'
    out[#out + 1] = f[3] or ''
    out[#out + 1] = attempts
  end
  return out
end

-- Seconds until the next delayed/retry job is due or the next lease expires (-1: none),
-- so an idle worker knows how long it may block.
local function next_event(P, now)
  local soonest = -1
  for _, z in ipairs({'delayed', 'retry', 'running'}) do
    local head = redis.call('ZRANGE', P .. z, 0, 0, 'WITHSCORES')
    if head[1] then
      local dt = tonumber(head[2]) - now
      if dt < 0 then dt = 0 end
      if soonest < 0 or dt < soonest then soonest = dt end
    end
  end
  return soonest
end

-- Both due-time sets, then expired leases: due jobs are promoted before a claim picks.
-- Unless forced, at most once per 50 ms per queue (a SET NX PX gate), which keeps the
-- busy ack-and-claim path to one extra call.
local function housekeep(P, now, force)
  if not force and not redis.call('SET', P .. 'hk', '1', 'PX', 50, 'NX') then
    return
  end
  promote(P, 'delayed', now, 100)
  promote(P, 'retry', now, 100)
  reap(P, now, 100)
end
