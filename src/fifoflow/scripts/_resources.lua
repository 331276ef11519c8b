-- _resources.lua: resource-aware claims (docs/resources.md), helpers appended to
-- _common.lua in the function library. A worker with declared capacity (gpu ids, cpu,
-- mem_gb, custom amounts, and `slots`: how many jobs it runs at once) keeps a record in
-- the queue's slot (K.cap .. NAME, listed in K.capacity by expiry). What it uses is never
-- counted up and down: it is the sum of the shares (F.alloc) of its jobs that are still
-- running with it (the ids in K.held .. NAME; any other is dropped there), so a job that
-- ends, fails, is released or lost frees its share in the same script that moves it.
--
-- The pick, for one worker W, over the first V.res_scan ready jobs in line order:
--   * a job that fits W's free capacity starts, unless a reservation forbids it;
--   * the first job that does not fit W: if it fits another live worker's free capacity,
--     that worker takes it; if it fits no live worker's capacity at all, it is passed
--     over (`fifoflow status` says so); else it is the blocked head and gets a
--     reservation (EASY backfilling): on the worker R where it can start first, at the
--     shadow time (when enough of R's running jobs end by their expected_seconds or
--     timeout). Behind it, a job may start on R only if it ends by the shadow time or
--     fits in what R has spare at that time beyond the head's need (`extra`); on another
--     worker it cannot delay the head. Unknown durations never end in this estimate: a
--     head that depends on one gets no backfill on R. With `strict`, nothing passes it.

local EPS = 1e-9

-- What a job needs (JSON object text, '' = nothing declared): every job also takes one
-- of its worker's slots.
local function res_need(text)
  local need = {}
  if text and text ~= '' then need = cjson.decode(text) end
  need.slots = 1
  return need
end

local function res_fits(need, free)
  for r, v in pairs(need) do
    if v > 0 and (free[r] or 0) + EPS < v then return false end
  end
  return true
end

local function res_add(free, need, sign)
  for r, v in pairs(need) do free[r] = (free[r] or 0) + sign * v end
end

-- When a running job is expected to end: start + expected_seconds (else its timeout);
-- nil when neither is known. Never before now.
local function res_ends(started, expected, timeout, now)
  local d = tonumber(expected) or tonumber(timeout)
  if not d then return nil end
  return math.max((tonumber(started) or now) + d, now)
end

-- A live resource worker: its capacity, free amounts, free GPU ids (in its order), pools
-- and running jobs {need, ends}. nil if it has no record.
local function res_worker(P, name, now)
  local h = redis.call('HMGET', P .. K.cap .. name, 'cap', 'gpus', 'host', 'strict', 'pools')
  if not h[1] then return nil end
  local w = {name = name, cap = cjson.decode(h[1]), ids = cjson.decode(h[2] or '[]'),
    host = h[3] or name, strict = h[4] == '1', pools = {}, free = {}, jobs = {}}
  for _, p in ipairs(cjson.decode(h[5] or '[]')) do w.pools[p] = true end
  for r, v in pairs(w.cap) do w.free[r] = v end
  local used = {}
  local held = P .. K.held .. name
  for _, id in ipairs(redis.call('SMEMBERS', held)) do
    local f = read(job_key(P, id), F.status, F.worker, F.alloc, F.started_at, F.expected,
      F.timeout)
    if f.status == S.running and f.worker == name and f.alloc and f.alloc ~= '' then
      local a = cjson.decode(f.alloc)
      res_add(w.free, a.need, -1)
      for _, g in ipairs(a.gpu_ids or {}) do used[g] = true end
      w.jobs[#w.jobs + 1] = {need = a.need, ends = res_ends(f.started_at, f.expected,
        f.timeout, now)}
    else
      redis.call('SREM', held, id)
    end
  end
  w.free_ids = {}
  for _, g in ipairs(w.ids) do
    if not used[g] then w.free_ids[#w.free_ids + 1] = g end
  end
  return w
end

-- Every live resource worker of the queue; expired records are dropped.
local function res_workers(P, now)
  local gone = redis.call('ZRANGEBYSCORE', P .. K.capacity, '-inf', now)
  for _, name in ipairs(gone) do
    redis.call('ZREM', P .. K.capacity, name)
    redis.call('DEL', P .. K.cap .. name, P .. K.held .. name)
  end
  local out = {}
  for _, name in ipairs(redis.call('ZRANGE', P .. K.capacity, 0, -1)) do
    local w = res_worker(P, name, now)
    if w then out[#out + 1] = w end
  end
  return out
end

-- The reservation of a blocked head that needs `need`, among the workers serving `pool`:
-- {w = worker name, shadow = time or nil (unknown: no backfill there), extra = spare
-- amounts at the shadow time}; nil if no live worker could ever hold it.
local function res_reserve(workers, need, pool)
  local best, unknown = nil, nil
  for _, w in ipairs(workers) do
    if w.pools[pool] and res_fits(need, w.cap) then
      local jobs = {}
      for _, j in ipairs(w.jobs) do
        if j.ends then jobs[#jobs + 1] = j end
      end
      table.sort(jobs, function(a, b) return a.ends < b.ends end)
      local free, shadow = {}, nil
      for r, v in pairs(w.free) do free[r] = v end
      for _, j in ipairs(jobs) do
        if shadow and j.ends > shadow then break end
        res_add(free, j.need, 1)
        if not shadow and res_fits(need, free) then shadow = j.ends end
      end
      if shadow and (best == nil or shadow < best.shadow) then
        res_add(free, need, -1)
        best = {w = w.name, shadow = shadow, extra = free}
      elseif not shadow and unknown == nil then
        unknown = {w = w.name, shadow = nil, extra = {}}
      end
    end
  end
  return best or unknown
end

-- Take job `id` (ready in `pool`) for worker `me`: its share (need and GPU ids), running,
-- in `held`.
local function res_take(P, me, id, pool, need, req, now, started, deadline)
  local a = {need = need}
  local n = math.floor((need.gpu or 0) + 0.5)
  if n > 0 then
    a.gpu_ids = {}
    for _ = 1, n do a.gpu_ids[#a.gpu_ids + 1] = table.remove(me.free_ids, 1) end
  end
  res_add(me.free, need, -1)
  local jk = job_key(P, id)
  local f = read(jk, F.target, F.params, F.timeout, F.attempts, F.pool, F.queued_at,
    F.gather, F.parents, F.expected, F.tags)
  me.jobs[#me.jobs + 1] = {need = need, ends = res_ends(now, f.expected, f.timeout, now)}
  f.attempts = tostring((tonumber(f.attempts) or 0) + 1)
  f.alloc = cjson.encode(a)
  local queued = tonumber(f.queued_at) or created_of(id)
  observe(P, 'wait', pool, V.wait_buckets, math.max(now - queued, 0))
  redis.call('ZREM', P .. K.ready .. pool, id)
  redis.call('HSET', jk, F.status, S.running, F.started_at, started, F.worker, req.worker,
    F.token, req.nonce, F.attempts, f.attempts, F.alloc, f.alloc,
    F.claim_seq, redis.call('INCR', P .. K.claims))
  redis.call('ZADD', P .. K.running, deadline, id)
  redis.call('SADD', P .. K.held .. req.worker, id)
  return f
end

-- The first V.res_scan ready jobs of the pools, in line order: {id, pool}.
local function res_line(P, pools)
  local all = {}
  for _, pool in ipairs(pools) do
    local got = redis.call('ZRANGE', P .. K.ready .. pool, 0, V.res_scan - 1, 'WITHSCORES')
    for i = 1, #got, 2 do
      all[#all + 1] = {id = got[i], pool = pool, score = tonumber(got[i + 1])}
    end
  end
  table.sort(all, function(a, b)
    if a.score ~= b.score then return a.score < b.score end
    return a.id < b.id
  end)
  return all
end

-- Claim up to req.n jobs for a worker with declared capacity (see the top of this file).
-- Returns the same flat array as claim().
local function res_claim(P, req, now)
  if req.resend then
    local out = claimed_before(P, req)
    if #out > 0 then return out end
  end
  local out = {}
  local workers = res_workers(P, now)
  local me = nil
  for _, w in ipairs(workers) do
    if w.name == req.worker then me = w end
  end
  if me == nil then return out end  -- its record expired: it registers again first
  local line = res_line(P, req.pools)
  local head, taken, other_fits = nil, 0, {}
  local deadline, started = now + req.lease, fmt_time(now)
  for i = 1, math.min(#line, V.res_scan) do
    if taken >= req.n then break end
    local c = line[i]
    local f = read(job_key(P, c.id), F.resources, F.expected, F.timeout)
    local need = res_need(f.resources)
    local ok = res_fits(need, me.free)
    if ok and head then
      if me.strict then break end
      if head.w == me.name then
        local est = tonumber(f.expected) or tonumber(f.timeout)
        if head.shadow and est and now + est <= head.shadow + EPS then
          ok = true
        elseif res_fits(need, head.extra) then
          res_add(head.extra, need, -1)
        else
          ok = false
        end
      end
    end
    if ok then
      local got = res_take(P, me, c.id, c.pool, need, req, now, started, deadline)
      claimed_fields(P, out, c.id, got)
      taken = taken + 1
    elseif not head then
      local elsewhere = false
      for _, w in ipairs(workers) do
        if w ~= me and w.pools[c.pool] and res_fits(need, w.free) then elsewhere = true end
      end
      if elsewhere then
        other_fits[c.pool] = true
      else
        head = res_reserve(workers, need, c.pool)
        if head and me.strict then break end
      end
    end
  end
  -- Wake-ups: a job that another worker can start now leaves it a token; when nothing
  -- here can start anywhere, stale tokens go, so this worker blocks until a push or an
  -- end frees something (complete.lua leaves a token then).
  for _, pool in ipairs(req.pools) do
    if other_fits[pool] then
      if redis.call('LLEN', P .. K.wake .. pool) == 0 then wake(P, pool) end
    elseif taken < req.n then
      redis.call('DEL', P .. K.wake .. pool)
    end
  end
  return out
end

-- A job with a share ended (complete.lua): its pool's blocked workers may fit more now.
local function res_freed(P, pool)
  if redis.call('ZCARD', P .. K.ready .. pool) > 0
    and redis.call('LLEN', P .. K.wake .. pool) == 0 then
    wake(P, pool)
  end
end
