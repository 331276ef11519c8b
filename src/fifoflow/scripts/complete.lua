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
local cur = redis.call('HMGET', jk, 'token', 'status', 'retries', 'pool', 'priority')
if cur[1] == token and cur[2] == 'running' and token ~= '' then
  redis.call('ZREM', P .. 'running', id)
  if ARGV[10] ~= '' then redis.call('HSET', jk, ARGV[10], ARGV[11]) end
  if outcome == 'ok' then
    redis.call('HSET', jk, 'result', ARGV[4])
    redis.call('HDEL', jk, 'error', 'traceback')
    finish(P, id, 'succeeded', now, ARGV[9])
    result = 'succeeded'
  else
    redis.call('HSET', jk, 'error', ARGV[4], 'traceback', ARGV[5])
    local failures = redis.call('HINCRBY', jk, 'failures', 1)
    if outcome == 'fail' and failures <= tonumber(cur[3] or '0') then
      local delay = tonumber(ARGV[6]) * (2 ^ (failures - 1))
      if delay > tonumber(ARGV[7]) then delay = tonumber(ARGV[7]) end
      delay = delay * tonumber(ARGV[8])
      redis.call('HSET', jk, 'status', 'delayed', 'token', '', 'due_at', fmt_time(now + delay))
      redis.call('ZADD', P .. 'retry', now + delay, id)
      result = 'retry'
    else
      finish(P, id, 'dead', now, ARGV[9])
      result = 'dead'
    end
  end
end
local pools = {}
for i = 15, #ARGV do pools[#pools + 1] = ARGV[i] end
local out = {}
local n = tonumber(ARGV[14])
if n > 0 then
  housekeep(P, now)
  out = claim(P, ARGV[12], tonumber(ARGV[13]), n, pools, now)
end
table.insert(out, 1, tostring(next_event(P, now)))
table.insert(out, 1, result)
return out
