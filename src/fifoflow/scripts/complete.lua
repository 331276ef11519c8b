-- complete.lua: record the outcome of one attempt, then claim the next job(s) for the
-- same slot in the same round trip. Refused (and nothing changes) unless the caller
-- holds the job's current fencing token and the job is still running.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  job id
-- ARGV[2]  fencing token
-- ARGV[3]  outcome: 'ok' | 'fail' (retry if any left) | 'dead' (no retry)
-- ARGV[4]  result JSON (ok) or one-line error (fail/dead)
-- ARGV[5]  traceback ('' if none)
-- ARGV[6]  retry base seconds    ARGV[7] retry cap seconds    ARGV[8] jitter in [0.5, 1]
-- ARGV[9]  ttl seconds of finished records
-- ARGV[10] extra field name to record ('' = none), ARGV[11] its value (e.g. flow run id)
-- ARGV[12] worker name   ARGV[13] lease seconds   ARGV[14] N to claim (0 = none)
-- ARGV[15..] pools served
-- Returns  {outcome, next_event_seconds, claimed jobs (6 fields each)...}
--          outcome: 'succeeded' | 'retry' | 'dead' | 'stale'
local P = KEYS[1]
local id, token, outcome = ARGV[1], ARGV[2], ARGV[3]
local jk = P .. 'job:' .. id
local now = now_s()
local result = 'stale'
local cur = redis.call('HMGET', jk, 'token', 'status', 'retries', 'key', 'failures')
if cur[1] == token and cur[2] == 'running' and token ~= '' then
  redis.call('ZREM', P .. 'running', id)
  local fields = {}
  if ARGV[10] ~= '' then fields = {ARGV[10], ARGV[11]} end
  if outcome == 'ok' then
    fields[#fields + 1] = 'result'
    fields[#fields + 1] = ARGV[4]
    if cur[5] then redis.call('HDEL', jk, 'error', 'traceback') end
    finish(P, id, 'succeeded', now, ARGV[9], cur[4], fields)
    result = 'succeeded'
  else
    local failures = (tonumber(cur[5]) or 0) + 1
    for _, v in ipairs({'error', ARGV[4], 'traceback', ARGV[5], 'failures', failures}) do
      fields[#fields + 1] = v
    end
    if outcome == 'fail' and failures <= tonumber(cur[3] or '0') then
      local delay = tonumber(ARGV[6]) * (2 ^ (failures - 1))
      if delay > tonumber(ARGV[7]) then delay = tonumber(ARGV[7]) end
      delay = delay * tonumber(ARGV[8])
      redis.call('HSET', jk, 'status', 'delayed', 'token', '', 'due_at', fmt_time(now + delay),
        unpack(fields))
      redis.call('ZADD', P .. 'retry', now + delay, id)
      result = 'retry'
    else
      finish(P, id, 'dead', now, ARGV[9], cur[4], fields)
      result = 'dead'
    end
  end
end
local pools = {}
for i = 15, #ARGV do pools[#pools + 1] = ARGV[i] end
local n = tonumber(ARGV[14])
local out = {}
if n > 0 then
  housekeep(P, now, false)
  out = claim(P, ARGV[12], tonumber(ARGV[13]), n, pools, now)
end
-- The time to the next event matters only to a slot that is about to go idle.
local soonest = -1
if n == 0 or #out < n * 6 then soonest = next_event(P, now) end
table.insert(out, 1, tostring(soonest))
table.insert(out, 1, result)
return out
