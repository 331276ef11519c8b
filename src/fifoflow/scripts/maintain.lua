-- maintain.lua: promote due jobs, reap expired leases, forget finished records past their
-- ttl, and drop pushes whose producer died while staging them. Cheap and idempotent; any
-- worker (or a stats call) may run it.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  ttl seconds of finished records      ARGV[2] max_lost default
-- Returns  {promoted, reaped, trimmed}
local P = KEYS[1]
local policy = {ttl = tonumber(ARGV[1]), max_lost = tonumber(ARGV[2])}
local now = now_s()
local promoted = promote(P, K.delayed, now, 1000) + promote(P, K.retry, now, 1000)
local reaped = reap(P, now, 1000, policy)
local trimmed = 0
if policy.ttl > 0 then
  -- Finished records past their ttl have expired: their ids leave the sets that list them.
  for _, z in ipairs({K.succeeded, K.dead, K.cancelled}) do
    local old = redis.call('ZRANGEBYSCORE', P .. z, '-inf', now - policy.ttl, 'LIMIT', 0, 1000)
    if #old > 0 then
      redis.call('ZREM', P .. z, unpack(old))
      forget(P, old)
      trimmed = trimmed + #old
    end
  end
end
for _, push_id in ipairs(redis.call('ZRANGEBYSCORE', P .. K.staging, '-inf', now - 3600,
    'LIMIT', 0, 10)) do
  for _, id in ipairs(ids_of(staged_runs(P, push_id))) do
    redis.call('DEL', job_key(P, id))
  end
  redis.call('DEL', P .. K.stage .. push_id)
  redis.call('ZREM', P .. K.staging, push_id)
end
return {promoted, reaped, trimmed}
