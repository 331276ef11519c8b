-- _common.lua: helpers the scripts share, defined once in fifoflow's function library
-- (scripts.py builds it). S.name, F.name, K.name, E.name and H.name are replaced by the
-- values of keys.Status (job statuses), keys.Field (job hash fields), keys.Key (key
-- suffixes), keys.Event (counters) and keys.ScheduleField (schedule hash fields), V.name
-- by values of keys (buckets, caps): one definition, in
-- Python. Every key a script touches starts with the prefix P = KEYS[1] = "ff:{QUEUE}:",
-- so all of them live in one Cluster slot; the keys are described in docs/architecture.md.

-- Wake tokens kept per pool at most; one wakes one blocked worker.
local WAKE_CAP = 1000
-- Seconds a request's reply is remembered for a re-send after a lost reply.
local REQ_TTL = 600

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt_time(t)
  return string.format('%.6f', t)
end

-- The named fields of a hash as a table: read(jk, F.status, F.pool).pool
local function read(key, ...)
  local names = {...}
  local values = redis.call('HMGET', key, unpack(names))
  local out = {}
  for i, name in ipairs(names) do out[name] = values[i] end
  return out
end

local function job_key(P, id)
  return P .. K.job .. id
end

-- One wake token for a blocked worker of `pool`.
local function wake(P, pool)
  local list = P .. K.wake .. pool
  if redis.call('LPUSH', list, '1') > WAKE_CAP then
    redis.call('LTRIM', list, 0, WAKE_CAP - 1)
  end
end

-- Put a job (back) at its place in line: its score is fixed by its priority and its
-- member by its id, so a retried, reaped or released job lands where it was.
local function enqueue_ready(P, id, pool, priority, now)
  redis.call('ZADD', P .. K.ready .. pool, -tonumber(priority), id)
  redis.call('HSET', job_key(P, id), F.status, S.queued, F.queued_at, fmt_time(now))
  wake(P, pool)
end

-- Monotonic counters (hash K.stats, field EVENT:POOL): never decremented, so they outlive
-- the job records they count.
local function count(P, event, pool, n)
  redis.call('HINCRBY', P .. K.stats, event .. ':' .. pool, n or 1)
end

-- One observation of a histogram (hash K.hist): its bucket's count (NAME:POOL:I, I = 1 for
-- the first bound ... #bounds + 1 for +Inf) and the sum in microseconds (NAME_us:POOL).
local function observe(P, name, pool, bounds, seconds)
  local i = #bounds + 1
  for b = 1, #bounds do
    if seconds <= bounds[b] then
      i = b
      break
    end
  end
  redis.call('HINCRBY', P .. K.hist, name .. ':' .. pool .. ':' .. i, 1)
  redis.call('HINCRBY', P .. K.hist, name .. '_us:' .. pool, math.floor(seconds * 1000000))
end

-- One finished attempt in the capped events stream: the dashboard's per-slot timeline.
local function timeline(P, id, f, slot, now, outcome)
  redis.call('XADD', P .. K.events, 'MAXLEN', '~', V.events_cap, '*', 'id', id,
    'target', f.target or '', 'pool', f.pool or '', 'worker', f.worker or '', 'slot', slot,
    'started', f.started_at or '', 'finished', fmt_time(now), 'outcome', outcome)
end

local function earliest_due(P)
  local soonest = nil
  for _, z in ipairs({K.delayed, K.retry}) do
    local head = redis.call('ZRANGE', P .. z, 0, 0, 'WITHSCORES')
    if head[1] and (soonest == nil or tonumber(head[2]) < soonest) then
      soonest = tonumber(head[2])
    end
  end
  return soonest
end

-- A job waits in a due-time set (delayed or retry). When it is due before everything
-- else, a wake token makes an idle worker recompute how long it may block.
local function schedule(P, zkey, id, due, pool)
  local soonest = earliest_due(P)
  redis.call('ZADD', P .. zkey, due, id)
  redis.call('HSET', job_key(P, id), F.status, S.delayed, F.due_at, fmt_time(due))
  if soonest == nil or due < soonest then wake(P, pool) end
end

-- Move due jobs from a due-time set (delayed or retry) into their ready sets.
local function promote(P, zkey, now, limit)
  local due = redis.call('ZRANGEBYSCORE', P .. zkey, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', P .. zkey, id)
    local f = read(job_key(P, id), F.pool, F.priority)
    if f.pool then enqueue_ready(P, id, f.pool, f.priority, now) end
  end
  return #due
end

-- Record a final status: the job leaves the dedupe index and expires after ttl.
-- `fields` are more HSET field/value pairs written in the same call; `key` is the job's
-- de-duplication key (false or '' if none).
local function finish(P, id, status, now, ttl, key, fields)
  local jk = job_key(P, id)
  redis.call('HSET', jk, F.status, status, F.finished_at, fmt_time(now), F.token, '',
    unpack(fields or {}))
  redis.call('ZADD', P .. status, now, id)
  if key and key ~= '' and redis.call('HGET', P .. K.keys, key) == id then
    redis.call('HDEL', P .. K.keys, key)
  end
  if tonumber(ttl) > 0 then redis.call('EXPIRE', jk, ttl) end
end

-- A running job lost its worker (lease expired, or the worker was seen dead). It counts:
-- past the job's max_lost (else the policy's) it is dead, so a job that kills its worker
-- cannot stall the queue for ever; before that it goes back to its place in line.
local function lose(P, id, now, policy)
  local jk = job_key(P, id)
  redis.call('ZREM', P .. K.running, id)
  local f = read(jk, F.pool, F.priority, F.worker, F.lost, F.max_lost, F.key, F.target,
    F.started_at)
  if not f.pool then return end
  local lost = (tonumber(f.lost) or 0) + 1
  local limit = tonumber(f.max_lost) or policy.max_lost
  count(P, E.lost, f.pool)
  timeline(P, id, f, '', now, E.lost)
  if lost > limit then
    local reason = 'WorkerLost: lost its worker ' .. lost .. ' times (last: ' ..
      (f.worker or '?') .. ')'
    finish(P, id, S.dead, now, policy.ttl, f.key, {F.lost, lost, F.error, reason,
      F.worker, ''})
    count(P, E.dead, f.pool)
  else
    redis.call('HSET', jk, F.token, '', F.worker, '', F.lost, lost)
    enqueue_ready(P, id, f.pool, f.priority, now)
  end
end

-- Jobs whose lease expired: their token is voided, so the lost worker can no longer
-- report on them.
local function reap(P, now, limit, policy)
  local expired = redis.call('ZRANGEBYSCORE', P .. K.running, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(expired) do lose(P, id, now, policy) end
  return #expired
end

-- Due jobs are promoted and expired leases reaped before a claim picks. Unless forced, at
-- most once per 50 ms per queue (a SET NX PX gate): one extra call on the busy path.
local function housekeep(P, now, force, policy)
  if not force and not redis.call('SET', P .. K.hk, '1', 'PX', 50, 'NX') then return end
  promote(P, K.delayed, now, 100)
  promote(P, K.retry, now, 100)
  reap(P, now, 100, policy)
end

-- The claim request at ARGV[i..]: worker, lease, n, nonce, max_lost, ttl, refill, resend,
-- pools... (see Broker._claim_args). `policy` is what housekeeping needs of it.
local function claim_request(argv, i)
  local req = {
    worker = argv[i], lease = tonumber(argv[i + 1]), n = tonumber(argv[i + 2]),
    nonce = argv[i + 3], refill = argv[i + 6] == '1', resend = argv[i + 7] == '1', pools = {},
  }
  req.policy = {max_lost = tonumber(argv[i + 4]), ttl = tonumber(argv[i + 5])}
  for j = i + 8, #argv do req.pools[#req.pools + 1] = argv[j] end
  return req
end

local function claimed_fields(out, id, f)
  out[#out + 1] = id
  out[#out + 1] = f.target or ''
  out[#out + 1] = f.params or '{}'
  out[#out + 1] = f.timeout or ''
  out[#out + 1] = f.attempts
end

-- The best head (highest priority, then oldest) across the pools' ready sets, removed.
local function pop_best(P, pools)
  if #pools == 1 then
    local head = redis.call('ZPOPMIN', P .. K.ready .. pools[1])
    return head[1]
  end
  local best_pool, best_id, best_score = nil, nil, nil
  for _, pool in ipairs(pools) do
    local head = redis.call('ZRANGE', P .. K.ready .. pool, 0, 0, 'WITHSCORES')
    if head[1] then
      local score = tonumber(head[2])
      if best_id == nil or score < best_score or (score == best_score and head[1] < best_id) then
        best_pool, best_id, best_score = pool, head[1], score
      end
    end
  end
  if best_id then redis.call('ZREM', P .. K.ready .. best_pool, best_id) end
  return best_id
end

-- Claim up to req.n jobs. Returns a flat array, 5 fields a job: id, target, params,
-- timeout, attempts. The fencing token is the request's nonce, chosen at random by the
-- worker: unique even if the server loses its last writes. The nonce also makes the claim
-- idempotent: a claim re-sent after a lost reply (the worker says so) returns the jobs the
-- first one took (those still running with this token), never new ones; only then are
-- the running jobs searched, so the common path pays nothing for it.
local function claim(P, req, now)
  local out = {}
  if req.resend then
    for _, id in ipairs(redis.call('ZRANGE', P .. K.running, 0, -1)) do
      local f = read(job_key(P, id), F.token, F.target, F.params, F.timeout, F.attempts)
      if f.token == req.nonce then claimed_fields(out, id, f) end
    end
    if #out > 0 then return out end
  end
  local ids = {}
  local deadline, started = now + req.lease, fmt_time(now)
  for _ = 1, req.n do
    local id = pop_best(P, req.pools)
    if id == nil then
      -- No lost wake-ups: with nothing ready in any served pool, stale tokens go, atomically,
      -- so any later push leaves a fresh token for a blocked worker.
      for _, pool in ipairs(req.pools) do redis.call('DEL', P .. K.wake .. pool) end
      break
    end
    local jk = job_key(P, id)
    local f = read(jk, F.target, F.params, F.timeout, F.attempts, F.pool, F.queued_at,
      F.created_at)
    f.attempts = tostring((tonumber(f.attempts) or 0) + 1)
    local queued = tonumber(f.queued_at or f.created_at) or now
    observe(P, 'wait', f.pool or '', V.wait_buckets, math.max(now - queued, 0))
    redis.call('HSET', jk, F.status, S.running, F.started_at, started, F.worker, req.worker,
      F.token, req.nonce, F.attempts, f.attempts,
      F.claim_seq, redis.call('INCR', P .. K.claims))
    redis.call('ZADD', P .. K.running, deadline, id)
    claimed_fields(out, id, f)
    ids[#ids + 1] = id
  end
  -- A worker woken by a token may have claimed from another pool than the token's: while
  -- jobs stay ready, leave a token, so a worker that can run them is not left idle.
  if req.refill and #ids == req.n then
    for _, pool in ipairs(req.pools) do
      if redis.call('ZCARD', P .. K.ready .. pool) > 0
        and redis.call('LLEN', P .. K.wake .. pool) == 0 then
        wake(P, pool)
      end
    end
  end
  return out
end

-- Seconds until the next delayed/retry job is due or the next lease expires (-1: none),
-- so an idle worker knows how long it may block.
local function next_event(P, now)
  local soonest = earliest_due(P)
  local lease = redis.call('ZRANGE', P .. K.running, 0, 0, 'WITHSCORES')
  if lease[1] and (soonest == nil or tonumber(lease[2]) < soonest) then
    soonest = tonumber(lease[2])
  end
  if soonest == nil then return -1 end
  return math.max(soonest - now, 0)
end

-- A request already done (its reply lost on the way back): the reply it gave, or nil.
-- Looked up only for a re-send (`resend`: '1'), so the common path pays nothing for it.
local function replayed(P, nonce, resend)
  if resend ~= '1' then return nil end
  local prior = redis.call('GET', P .. K.req .. nonce)
  if prior then return cjson.decode(prior) end
  return nil
end

local function remember(P, nonce, reply)
  redis.call('SET', P .. K.req .. nonce, cjson.encode(reply), 'EX', REQ_TTL)
  return reply
end

-- Jobs waiting in line (ready in any pool, delayed, or waiting for a retry): what
-- max_length bounds.
local function pending(P)
  local n = redis.call('ZCARD', P .. K.delayed) + redis.call('ZCARD', P .. K.retry)
  for _, pool in ipairs(redis.call('SMEMBERS', P .. K.pools)) do
    n = n + redis.call('ZCARD', P .. K.ready .. pool)
  end
  return n
end

-- The active job holding a de-duplication key (queued, delayed or running), or nil.
local function holder(P, key)
  local id = redis.call('HGET', P .. K.keys, key)
  if not id then return nil end
  local st = redis.call('HGET', job_key(P, id), F.status)
  if st == S.queued or st == S.delayed or st == S.running then return id end
  return nil
end

-- The push spec at ARGV[i..]: target, priority, pool, retries, timeout, delay, max_lost.
local function push_spec(argv, i)
  return {
    target = argv[i], priority = argv[i + 1], pool = argv[i + 2], retries = argv[i + 3],
    timeout = argv[i + 4], delay = tonumber(argv[i + 5]) or 0, max_lost = argv[i + 6],
  }
end

-- Ranks: strictly increasing per queue, close to server time (microseconds), fixed-width
-- hex, so ids sort by creation and equal-priority jobs sort by rank in a ready set.
local function new_ids(P, suffix, count, now)
  local last = tonumber(redis.call('GET', P .. K.seq) or '0')
  local rank = math.floor(now * 1000000)
  if rank <= last then rank = last + 1 end
  local ids = {}
  for i = 0, count - 1 do ids[#ids + 1] = string.format('%014x', rank + i) .. suffix end
  redis.call('SET', P .. K.seq, string.format('%d', rank + count - 1))
  return ids
end

-- The job's hash, not yet in any set.
local function write_job(P, id, spec, params, key, now)
  local jk = job_key(P, id)
  redis.call('HSET', jk, F.target, spec.target, F.params, params, F.priority, spec.priority,
    F.pool, spec.pool, F.retries, spec.retries, F.created_at, fmt_time(now), F.attempts, 0,
    F.status, S.queued)
  if spec.timeout ~= '' then redis.call('HSET', jk, F.timeout, spec.timeout) end
  if spec.max_lost ~= '' then redis.call('HSET', jk, F.max_lost, spec.max_lost) end
  if key ~= '' then redis.call('HSET', jk, F.key, key) end
end

-- New jobs of one push become visible: ready (one ZADD per chunk, one wake token a job up to
-- the cap) or delayed, and their keys enter the dedupe index.
local function publish(P, ids, keys_by_id, spec, now)
  redis.call('SADD', P .. K.pools, spec.pool)
  if #ids > 0 then count(P, E.pushed, spec.pool, #ids) end
  local by_rank = {}
  for i, id in ipairs(ids) do
    by_rank[#by_rank + 1] = tonumber(string.sub(id, 1, 14), 16)
    by_rank[#by_rank + 1] = id
    if #by_rank >= 4000 or i == #ids then
      redis.call('ZADD', P .. K.all, unpack(by_rank))
      by_rank = {}
    end
  end
  for id, key in pairs(keys_by_id) do redis.call('HSET', P .. K.keys, key, id) end
  if spec.delay > 0 then
    for _, id in ipairs(ids) do schedule(P, K.delayed, id, now + spec.delay, spec.pool) end
    return S.delayed
  end
  local score = -tonumber(spec.priority)
  local chunk = {}
  for i, id in ipairs(ids) do
    chunk[#chunk + 1] = score
    chunk[#chunk + 1] = id
    if #chunk >= 4000 or i == #ids then
      redis.call('ZADD', P .. K.ready .. spec.pool, unpack(chunk))
      chunk = {}
    end
  end
  local list = P .. K.wake .. spec.pool
  local tokens = math.min(#ids, WAKE_CAP)
  local ones = {}
  for i = 1, tokens do ones[i] = '1' end
  if tokens > 0 then
    if redis.call('LPUSH', list, unpack(ones)) > WAKE_CAP then
      redis.call('LTRIM', list, 0, WAKE_CAP - 1)
    end
  end
  return S.queued
end
