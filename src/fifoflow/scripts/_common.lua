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

-- Job fields whose default value a record leaves out (write_job): read() fills it in. A
-- job's status is left out while it is the first one, queued.
local DEFAULTS = {[F.pool] = V.default_pool, [F.retries] = V.default_retries,
  [F.status] = S.queued}

-- The named fields of a job's hash as a table: read(jk, F.status, F.pool).pool. A field
-- not there is false, or its default (DEFAULTS) if the record exists (every record has
-- its params, from write_job on).
local function read(key, ...)
  local names = {...}
  local n = #names
  names[n + 1] = F.params
  local values = redis.call('HMGET', key, unpack(names))
  local exists = values[n + 1] ~= false
  local out = {}
  for i = 1, n do
    local name, value = names[i], values[i]
    if value == false and exists then value = DEFAULTS[name] or false end
    out[name] = value
  end
  return out
end

local function job_key(P, id)
  return P .. K.job .. id
end

-- A job's rank: the first 14 hex digits of its id, the server's time in microseconds at
-- its push (unique and increasing per queue, see new_ids).
local function rank_of(id)
  return tonumber(string.sub(id, 1, 14), 16)
end

-- When job `id` was pushed.
local function created_of(id)
  return rank_of(id) / 1000000
end

-- ZADD of a flat {score, member, ...} list, however long, in calls of 2,000 members (a
-- Lua call's arguments are bounded).
local function zadd_pairs(zset, flat)
  for i = 1, #flat, 4000 do
    redis.call('ZADD', zset, unpack(flat, i, math.min(i + 3999, #flat)))
  end
end

-- The `all` index lists every job by push order with one entry per run of consecutive ids
-- (a push's batch), not one per job: "FIRST COUNT LEFT", scored by FIRST's rank, where
-- LEFT counts the run's records not yet forgotten; a lone job is its bare id. Runs are
-- {first id, count}.
local function index_runs(P, runs)
  local flat = {}
  for _, run in ipairs(runs) do
    flat[#flat + 1] = rank_of(run[1])
    flat[#flat + 1] = run[2] == 1 and run[1] or (run[1] .. ' ' .. run[2] .. ' ' .. run[2])
  end
  zadd_pairs(P .. K.all, flat)
end

-- The runs of consecutive ranks in `ids` (in increasing order).
local function runs_of(ids)
  local runs, last = {}, nil
  for _, id in ipairs(ids) do
    local rank = rank_of(id)
    if last and rank == last + 1 then
      runs[#runs][2] = runs[#runs][2] + 1
    else
      runs[#runs + 1] = {id, 1}
    end
    last = rank
  end
  return runs
end

-- Records that are gone (expired, purged) leave the `all` index: their runs count them
-- down and go at zero. `ids` are sorted (in place), so one look-up serves a whole run.
local function forget(P, ids)
  table.sort(ids)
  local entry, first, count, left = nil, nil, 0, 0
  local function flush()
    if entry == nil then return end
    redis.call('ZREM', P .. K.all, entry)
    if left > 0 then
      redis.call('ZADD', P .. K.all, rank_of(first), first .. ' ' .. count .. ' ' .. left)
    end
    entry = nil
  end
  for _, id in ipairs(ids) do
    local rank = rank_of(id)
    if not (entry and rank >= rank_of(first) and rank < rank_of(first) + count) then
      flush()
      local hit = redis.call('ZREVRANGEBYSCORE', P .. K.all, rank, '-inf', 'LIMIT', 0, 1)[1]
      if hit then
        local f, c, l = string.match(hit, '^(%S+) (%d+) (%d+)$')
        if f == nil then f, c, l = hit, '1', '1' end
        if rank < rank_of(f) + tonumber(c) then
          entry, first, count, left = hit, f, tonumber(c), tonumber(l)
        end
      end
    end
    if entry then left = left - 1 end
  end
  flush()
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
  redis.call('ZADD', P .. K.ready .. pool, -(tonumber(priority) or 0), id)
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
    F.target, f.target or '', F.pool, f.pool or '', F.worker, f.worker or '', 'slot', slot,
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
-- else, an idle worker must recompute how long it may block: a wake token does that.
-- Returns the pool to wake then, or nil; the caller wakes it once it has done everything
-- else (a claim in the same call would otherwise drop the token: nothing is ready yet).
local function schedule(P, zkey, id, due, pool)
  local soonest = earliest_due(P)
  redis.call('ZADD', P .. zkey, due, id)
  redis.call('HSET', job_key(P, id), F.status, S.delayed, F.due_at, fmt_time(due))
  if soonest == nil or due < soonest then return pool end
  return nil
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

-- The prefix of another queue's keys (a dependency may cross queues of one server).
local function prefix_of(queue)
  return 'ff:{' .. queue .. '}:'
end

-- Record a final status: the job leaves the dedupe index, expires after its ttl (its own,
-- else `ttl`), and result waiters hear of it. `job` holds what the caller read of it: key
-- (its de-duplication key), result_ttl. `fields` are more HSET pairs written with it.
local function record_final(P, id, status, now, ttl, job, fields)
  local jk = job_key(P, id)
  redis.call('HSET', jk, F.status, status, F.finished_at, fmt_time(now), F.token, '',
    unpack(fields or {}))
  redis.call('ZADD', P .. status, now, id)
  if job.key and job.key ~= '' and redis.call('HGET', P .. K.keys, job.key) == id then
    redis.call('HDEL', P .. K.keys, job.key)
  end
  local keep = tonumber(job.result_ttl) or tonumber(ttl)
  if keep > 0 then redis.call('EXPIRE', jk, keep) end
  redis.call('PUBLISH', P .. K.done, id)
end

-- The one door to a final status: record it, then settle the jobs waiting on this one
-- (job.children = '1'): a success counts down their parents, and the last one puts them
-- in line at their own places (their ids keep their rank); a failure makes them dead, and
-- theirs after them, unless they asked to run anyway (on_parent_failure = 'run').
local function finish(P, id, status, now, ttl, job, fields)
  record_final(P, id, status, now, ttl, job, fields)
  if job.children ~= '1' then return end
  local stack = {{P, id, status}}
  while #stack > 0 do
    local top = table.remove(stack)
    local PP, pid, pstatus = top[1], top[2], top[3]
    local ck = PP .. K.children .. pid
    for _, ref in ipairs(redis.call('SMEMBERS', ck)) do
      local cq, cid = string.match(ref, '^([^/]+)/(.+)$')
      local CP = prefix_of(cq)
      local cjk = job_key(CP, cid)
      local c = read(cjk, F.status, F.on_parent_failure, F.gather, F.pool, F.priority,
        F.key, F.result_ttl, F.children)
      if c.status == S.waiting then
        local ok = pstatus == S.succeeded
        if ok or c.on_parent_failure == 'run' then
          if c.gather and c.gather ~= '' then
            local result = ok and redis.call('HGET', job_key(PP, pid), F.result) or 'null'
            redis.call('HSET', CP .. K.gathered .. cid, pid, result or 'null')
          end
          if redis.call('HINCRBY', cjk, F.waiting_on, -1) <= 0 then
            redis.call('ZREM', CP .. K.waiting, cid)
            enqueue_ready(CP, cid, c.pool, c.priority, now)
          end
        else
          redis.call('ZREM', CP .. K.waiting, cid)
          record_final(CP, cid, S.dead, now, ttl, c,
            {F.error, 'DependencyFailed: parent ' .. pid .. ' ' .. pstatus})
          count(CP, E.dead, c.pool)
          if c.children == '1' then stack[#stack + 1] = {CP, cid, S.dead} end
        end
      end
    end
    redis.call('DEL', ck)
  end
end

-- A running job lost its worker (lease expired, or the worker was seen dead). It counts:
-- past the job's max_lost (else the policy's) it is dead, so a job that kills its worker
-- cannot stall the queue for ever; before that it goes back to its place in line.
local function lose(P, id, now, policy)
  local jk = job_key(P, id)
  redis.call('ZREM', P .. K.running, id)
  local f = read(jk, F.pool, F.priority, F.worker, F.lost, F.max_lost, F.key, F.target,
    F.started_at, F.result_ttl, F.children, F.cancel)
  if not f.pool then return end
  local lost = (tonumber(f.lost) or 0) + 1
  local limit = tonumber(f.max_lost) or policy.max_lost
  count(P, E.lost, f.pool)
  timeline(P, id, f, '', now, E.lost)
  if f.cancel == '1' then  -- asked to cancel while it ran: it ends so, not back in line
    finish(P, id, S.cancelled, now, policy.ttl, f, {F.lost, lost, F.worker, ''})
    count(P, E.cancelled, f.pool)
  elseif lost > limit then
    local reason = 'WorkerLost: lost its worker ' .. lost .. ' times (last: ' ..
      (f.worker or '?') .. ')'
    finish(P, id, S.dead, now, policy.ttl, f, {F.lost, lost, F.error, reason, F.worker, ''})
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
-- res ('1': a worker with declared capacity, see _resources.lua), pools... (see
-- Broker._claim_args). `policy` is what housekeeping needs of it.
local function claim_request(argv, i)
  local req = {
    worker = argv[i], lease = tonumber(argv[i + 1]), n = tonumber(argv[i + 2]),
    nonce = argv[i + 3], refill = argv[i + 6] == '1', resend = argv[i + 7] == '1',
    res = argv[i + 8] == '1', pools = {},
  }
  req.policy = {max_lost = tonumber(argv[i + 4]), ttl = tonumber(argv[i + 5])}
  for j = i + 9, #argv do req.pools[#req.pools + 1] = argv[j] end
  return req
end

-- What a gathering job gets: its parents' results, in its parents' (push) order, as the
-- text of a JSON array (each result is JSON text already); '' for other jobs.
local function gathered(P, id, f)
  if not f.gather or f.gather == '' then return '' end
  local results = {}
  for ref in string.gmatch(f.parents or '', '[^,]+') do
    local pid = string.match(ref, '/(.+)$')
    results[#results + 1] = redis.call('HGET', P .. K.gathered .. id, pid) or 'null'
  end
  return '[' .. table.concat(results, ',') .. ']'
end

local function claimed_fields(P, out, id, f)
  out[#out + 1] = id
  out[#out + 1] = f.target or ''
  out[#out + 1] = f.params or '{}'
  out[#out + 1] = f.timeout or ''
  out[#out + 1] = f.attempts
  out[#out + 1] = f.gather or ''
  out[#out + 1] = gathered(P, id, f)
  out[#out + 1] = f.alloc or ''
  out[#out + 1] = f.tags or ''
  out[#out + 1] = f.queued_at or fmt_time(created_of(id))
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

-- The jobs a re-sent claim's first sending took (running with its token), as claim() returns them.
local function claimed_before(P, req)
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', P .. K.running, 0, -1)) do
    local f = read(job_key(P, id), F.token, F.target, F.params, F.timeout, F.attempts,
      F.gather, F.parents, F.alloc, F.tags, F.queued_at)
    if f.token == req.nonce then claimed_fields(P, out, id, f) end
  end
  return out
end

-- Claim up to req.n jobs. Returns a flat array, 10 fields a job (claimed_fields): id,
-- target, params, timeout, attempts, gather mode, gathered results, its share of
-- resources ('' if none), tags (JSON array text or ''), and when it last entered the line
-- (Unix seconds text; a job never re-queued entered it when pushed: its rank, created_of).
-- The fencing token is the request's nonce, chosen at random by the
-- worker: unique even if the server loses its last writes. The nonce also makes the claim
-- idempotent: a claim re-sent after a lost reply (the worker says so) returns the jobs the
-- first one took (those still running with this token), never new ones; only then are
-- the running jobs searched, so the common path pays nothing for it.
local function claim(P, req, now)
  if req.resend then
    local out = claimed_before(P, req)
    if #out > 0 then return out end
  end
  local out = {}
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
      F.gather, F.parents, F.tags)
    f.attempts = tostring((tonumber(f.attempts) or 0) + 1)
    local queued = tonumber(f.queued_at) or created_of(id)
    observe(P, 'wait', f.pool or '', V.wait_buckets, math.max(now - queued, 0))
    redis.call('HSET', jk, F.status, S.running, F.started_at, started, F.worker, req.worker,
      F.token, req.nonce, F.attempts, f.attempts,
      F.claim_seq, redis.call('INCR', P .. K.claims))
    redis.call('ZADD', P .. K.running, deadline, id)
    claimed_fields(P, out, id, f)
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

-- A push's reply is runs of consecutive ranks with the same flags: 'OK', then per run its
-- first id, its length, new ('1' added, '0' de-duplicated) and status (broker_push
-- expands them). A million-job push replies, and keeps for a re-send, a few runs per
-- batch, not a few strings per job. `n` consecutive ids from `id` (default 1) are added.
local function add_run(runs, id, new, st, n)
  n = n or 1
  local run = runs[#runs]
  local rank = rank_of(id)
  if type(run) == 'table' and rank == run.last + 1 and run[3] == new and run[4] == st
    and string.sub(id, 15) == string.sub(run[1], 15) then
    run[2], run.last = run[2] + n, rank + n - 1
  else
    runs[#runs + 1] = {id, n, new, st, last = rank + n - 1}
  end
end

-- The runs as a reply (a flat array, as remember keeps it).
local function flat_runs(runs)
  local out = {runs[1]}
  for r = 2, #runs do
    for k = 1, 4 do out[#out + 1] = runs[r][k] end
  end
  return out
end

-- Jobs waiting in line (ready in any pool, delayed, waiting for a retry or for parents):
-- what max_length bounds.
local function pending(P)
  local n = redis.call('ZCARD', P .. K.delayed) + redis.call('ZCARD', P .. K.retry)
    + redis.call('ZCARD', P .. K.waiting)
  for _, pool in ipairs(redis.call('SMEMBERS', P .. K.pools)) do
    n = n + redis.call('ZCARD', P .. K.ready .. pool)
  end
  return n
end

-- The queue's back-pressure: nil when `adding` more jobs fit under its max_length, else the
-- reply that refuses them: {'FULL', pending, max_length, adding}.
local function too_full(P, adding)
  local max_length = tonumber(redis.call('HGET', P .. K.meta, 'max_length') or '')
  if max_length and adding > 0 then
    local waiting = pending(P)
    if waiting + adding > max_length then
      return {'FULL', tostring(waiting), tostring(max_length), tostring(adding)}
    end
  end
  return nil
end

-- The active job holding a de-duplication key (queued, waiting, delayed or running), or nil.
local function holder(P, key)
  local id = redis.call('HGET', P .. K.keys, key)
  if not id then return nil end
  local st = read(job_key(P, id), F.status).status
  if st == S.queued or st == S.delayed or st == S.running or st == S.waiting then return id end
  return nil
end

-- The push spec at ARGV[i..]: target, priority, pool, retries, timeout, delay, max_lost.
-- ARGV places it takes: target, priority, pool, retries, timeout, delay, max_lost,
-- parents ("QUEUE/ID,..." or ''), gather ('' | 'results' | 'input'), on_parent_failure,
-- result_ttl ('' = the queue's), alias ('' = none; one-job pushes only), resources (JSON
-- object, '' = one slot's worth), expected seconds ('' = not declared), tags (a JSON
-- array of strings, '' = none).
local SPEC_LEN = 15
local function push_spec(argv, i)
  local spec = {
    target = argv[i], priority = argv[i + 1], pool = argv[i + 2], retries = argv[i + 3],
    timeout = argv[i + 4], delay = tonumber(argv[i + 5]) or 0, max_lost = argv[i + 6],
    parents = argv[i + 7], gather = argv[i + 8], on_parent_failure = argv[i + 9],
    result_ttl = argv[i + 10], alias = argv[i + 11], resources = argv[i + 12],
    expected = argv[i + 13], tags = argv[i + 14] or '', refs = {},
  }
  spec.plain = spec.priority == '0' and spec.pool == DEFAULTS[F.pool]
    and spec.retries == DEFAULTS[F.retries]
  for ref in string.gmatch(spec.parents, '[^,]+') do spec.refs[#spec.refs + 1] = ref end
  return spec
end

-- Where a push's parents stand: the ones still to finish (pending), the results a
-- gathering job gets of those already done, and the first that failed. nil and the
-- unknown parent if one does not exist (nothing is written then).
local function parents_state(spec)
  local state = {pending = {}, results = {}, failed = nil}
  for _, ref in ipairs(spec.refs) do
    local q, pid = string.match(ref, '^([^/]+)/(.+)$')
    local pjk = job_key(prefix_of(q), pid)
    local pf = read(pjk, F.status, F.result)
    if not pf.status then return nil, ref end
    if pf.status == S.succeeded then
      state.results[pid] = pf.result or 'null'
    elseif pf.status == S.dead or pf.status == S.cancelled then
      state.failed = state.failed or (pid .. ' ' .. pf.status)
      state.results[pid] = 'null'
    else
      state.pending[#state.pending + 1] = {prefix_of(q), pid}
    end
  end
  return state
end

-- Ranks: strictly increasing per queue, close to server time (microseconds), fixed-width
-- hex, so ids sort by creation and equal-priority jobs sort by rank in a ready set.
local function new_ids(P, suffix, count, now)
  local last = tonumber(redis.call('GET', P .. K.seq) or '0')
  local rank = math.floor(now * 1000000)
  if rank <= last then rank = last + 1 end
  local ids = {}
  for i = 1, count do ids[i] = string.format('%014x%s', rank + i - 1, suffix) end
  redis.call('SET', P .. K.seq, string.format('%d', rank + count - 1))
  return ids
end

-- The runs a multi-batch push staged ({first id, count}, see index_runs). Its stage list
-- keeps one per batch, "FIRST COUNT" (a batch's ranks are consecutive): a few bytes per
-- batch, not an entry per job.
local function staged_runs(P, push_id)
  local runs = {}
  for _, run in ipairs(redis.call('LRANGE', P .. K.stage .. push_id, 0, -1)) do
    local first, n = string.match(run, '^(%S+) (%d+)$')
    runs[#runs + 1] = {first, tonumber(n)}
  end
  return runs
end

-- The ids of runs, in order.
local function ids_of(runs)
  local ids, n = {}, 0
  for _, run in ipairs(runs) do
    local rank, suffix = rank_of(run[1]), string.sub(run[1], 15)
    for k = 0, run[2] - 1 do ids[n + k + 1] = string.format('%014x%s', rank + k, suffix) end
    n = n + run[2]
  end
  return ids
end

-- The job's hash, not yet in any set: one HSET of the fields it needs. Its creation time
-- is its rank (created_of), attempts is 0 until a claim counts one, and a default priority
-- (0), pool, retries or status (queued; DEFAULTS) is not stored (read() and job_record
-- fill them in), which keeps a queued job small (docs/benchmarks.md, "Scale").
local function write_job(P, id, spec, params, key)
  local jk = job_key(P, id)
  if spec.plain then  -- all three at their defaults (push_spec)
    redis.call('HSET', jk, F.target, spec.target, F.params, params)
  else
    local fields = {F.target, spec.target, F.params, params}
    for _, f in ipairs({{F.priority, spec.priority, '0'}, {F.pool, spec.pool, DEFAULTS[F.pool]},
        {F.retries, spec.retries, DEFAULTS[F.retries]}}) do
      if f[2] ~= f[3] then
        fields[#fields + 1] = f[1]
        fields[#fields + 1] = f[2]
      end
    end
    redis.call('HSET', jk, unpack(fields))
  end
  if spec.timeout ~= '' then redis.call('HSET', jk, F.timeout, spec.timeout) end
  if spec.max_lost ~= '' then redis.call('HSET', jk, F.max_lost, spec.max_lost) end
  if spec.result_ttl ~= '' then redis.call('HSET', jk, F.result_ttl, spec.result_ttl) end
  if spec.tags ~= '' then redis.call('HSET', jk, F.tags, spec.tags) end
  if key ~= '' then redis.call('HSET', jk, F.key, key) end
  if spec.resources ~= '' then redis.call('HSET', jk, F.resources, spec.resources) end
  if spec.expected ~= '' then redis.call('HSET', jk, F.expected, spec.expected) end
  if spec.alias ~= '' then
    redis.call('HSET', jk, F.alias, spec.alias)
    redis.call('HSET', P .. K.aliases, spec.alias, id)
  end
end

-- New jobs with parents: each remembers them; the pending parents remember it. Returns
-- what becomes of the jobs now: S.queued (ready), S.waiting (for the pending parents) or
-- S.dead (a parent failed and they did not ask to run anyway).
local function attach(P, ids, spec, state, now)
  if #spec.refs == 0 then return 'ready' end
  local queue = string.match(P, '^ff:{(.+)}:$')
  local dead = state.failed and spec.on_parent_failure ~= 'run'
  for _, id in ipairs(ids) do
    local jk = job_key(P, id)
    redis.call('HSET', jk, F.parents, spec.parents, F.waiting_on, #state.pending,
      F.gather, spec.gather, F.on_parent_failure, spec.on_parent_failure)
    if not dead then
      if spec.gather ~= '' then
        for pid, result in pairs(state.results) do
          redis.call('HSET', P .. K.gathered .. id, pid, result)
        end
      end
      for _, parent in ipairs(state.pending) do
        redis.call('SADD', parent[1] .. K.children .. parent[2], queue .. '/' .. id)
        redis.call('HSET', job_key(parent[1], parent[2]), F.children, '1')
      end
    end
  end
  if dead then return S.dead end
  if #state.pending > 0 then return S.waiting end
  return S.queued
end

-- New jobs of one push, all in one state (`fate`, from attach) become visible: ready (one
-- ZADD per chunk, one wake token a job up to the cap) or delayed; waiting for parents; or
-- dead at once (a parent failed). Their keys enter the dedupe index unless dead. `runs`:
-- the ids' runs if the caller knows them (else found here).
local function publish(P, ids, keys_by_id, spec, now, fate, state, ttl, runs)
  redis.call('SADD', P .. K.pools, spec.pool)
  if #ids > 0 then count(P, E.pushed, spec.pool, #ids) end
  index_runs(P, runs or runs_of(ids))
  if fate == S.waiting then
    local by_rank = {}
    for _, id in ipairs(ids) do
      by_rank[#by_rank + 1] = rank_of(id)
      by_rank[#by_rank + 1] = id
    end
    zadd_pairs(P .. K.waiting, by_rank)
  end
  if fate == S.dead then
    local why = {F.error, 'DependencyFailed: parent ' .. state.failed}
    for _, id in ipairs(ids) do
      record_final(P, id, S.dead, now, ttl, {result_ttl = spec.result_ttl}, why)
    end
    count(P, E.dead, spec.pool, #ids)
    return S.dead
  end
  for id, key in pairs(keys_by_id) do redis.call('HSET', P .. K.keys, key, id) end
  if fate == S.waiting then
    for _, id in ipairs(ids) do redis.call('HSET', job_key(P, id), F.status, S.waiting) end
    return S.waiting
  end
  if spec.delay > 0 then
    local first = nil
    for _, id in ipairs(ids) do
      first = schedule(P, K.delayed, id, now + spec.delay, spec.pool) or first
    end
    if first then wake(P, first) end
    return S.delayed
  end
  local score = string.format('%d', -tonumber(spec.priority))  -- text: no conversion a job
  local by_score = {}
  for j, id in ipairs(ids) do
    by_score[2 * j - 1] = score
    by_score[2 * j] = id
  end
  zadd_pairs(P .. K.ready .. spec.pool, by_score)
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
