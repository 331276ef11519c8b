-- push.lua: add a batch of jobs to one queue, all or nothing.
-- KEYS[1]  queue prefix "ff:{QUEUE}:" (routing and key names)
-- ARGV[1]  id suffix (4 hex digits of the queue name)
-- ARGV[2]  number of jobs N
-- ARGV[3]  jobs of the same push_many still to come in later batches (counted against
--          max_length here, so a push_many that does not fit fails before its first batch)
-- ARGV[4..] N groups of 8: target, params (JSON), priority, pool, key ('' = none),
--           retries, timeout ('' = none), delay seconds ('' or 0 = none)
-- Returns  {'OK', id1, new1, status1, ...}  (new = '1' added, '0' de-duplicated)
--       or {'FULL', pending, max_length, adding}   (nothing added)
local P = KEYS[1]
local suffix = ARGV[1]
local n = tonumber(ARGV[2])
local now = now_s()

-- De-duplication first: a key already queued, delayed or running returns that job.
local existing = {}
local new_count = 0
local batch_keys = {}
for i = 0, n - 1 do
  local key = ARGV[4 + i * 8 + 4]
  local hit = nil
  -- A key repeated within this batch is not new: the loop below gives it the id made
  -- for its first occurrence (by_key).
  local repeated = key ~= '' and batch_keys[key]
  if key ~= '' and not repeated then
    local id = redis.call('HGET', P .. 'keys', key)
    if id then
      local st = redis.call('HGET', P .. 'job:' .. id, 'status')
      if st == 'queued' or st == 'delayed' or st == 'running' then hit = id end
    end
  end
  existing[i] = hit
  if not hit and not repeated then
    new_count = new_count + 1
    if key ~= '' then batch_keys[key] = true end
  end
end

-- Back-pressure: queued + delayed (+ waiting for retry) may not pass max_length.
local max_length = tonumber(redis.call('HGET', P .. 'meta', 'max_length') or '')
if max_length and new_count > 0 then
  local pending = redis.call('ZCARD', P .. 'delayed') + redis.call('ZCARD', P .. 'retry')
  for _, pool in ipairs(redis.call('SMEMBERS', P .. 'pools')) do
    pending = pending + redis.call('ZCARD', P .. 'ready:' .. pool)
  end
  local adding = new_count + (tonumber(ARGV[3]) or 0)
  if pending + adding > max_length then
    return {'FULL', tostring(pending), tostring(max_length), tostring(adding)}
  end
end

local out = {'OK'}
local last = tonumber(redis.call('GET', P .. 'seq') or '0')
local created = fmt_time(now)
local now_us = math.floor(now * 1000000)
local by_key = {}
for i = 0, n - 1 do
  local b = 4 + i * 8
  local target, params, priority, pool = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local key, retries, timeout, delay = ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
  local id = existing[i] or (key ~= '' and by_key[key])
  if id then
    out[#out + 1] = id
    out[#out + 1] = '0'
    out[#out + 1] = redis.call('HGET', P .. 'job:' .. id, 'status') or 'queued'
  else
    -- The rank: strictly increasing per queue, close to server time, fixed-width hex.
    local rank = now_us
    if rank <= last then rank = last + 1 end
    last = rank
    id = string.format('%014x', rank) .. suffix
    local jk = P .. 'job:' .. id
    redis.call('HSET', jk, 'target', target, 'params', params, 'priority', priority,
      'pool', pool, 'retries', retries, 'created_at', created, 'attempts', 0)
    if timeout ~= '' then redis.call('HSET', jk, 'timeout', timeout) end
    if key ~= '' then
      redis.call('HSET', jk, 'key', key)
      redis.call('HSET', P .. 'keys', key, id)
      by_key[key] = id
    end
    redis.call('SADD', P .. 'pools', pool)
    local d = tonumber(delay) or 0
    local status = 'queued'
    if d > 0 then
      status = 'delayed'
      redis.call('HSET', jk, 'status', status, 'due_at', fmt_time(now + d))
      redis.call('ZADD', P .. 'delayed', now + d, id)
    else
      enqueue_ready(P, id, pool, priority)
    end
    out[#out + 1] = id
    out[#out + 1] = '1'
    out[#out + 1] = status
  end
end
redis.call('SET', P .. 'seq', string.format('%d', last))
return out
