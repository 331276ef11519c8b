-- maintain.lua: promote due jobs, reap expired leases, forget finished records past
-- their ttl. Cheap and idempotent; any worker (or a stats call) may run it.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  ttl seconds of finished records
-- Returns  {promoted, reaped, trimmed}
local P = KEYS[1]
local now = now_s()
local promoted = promote(P, 'delayed', now, 1000) + promote(P, 'retry', now, 1000)
local reaped = reap(P, now, 1000)
local trimmed = 0
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  for _, z in ipairs({'succeeded', 'dead', 'cancelled'}) do
    trimmed = trimmed + redis.call('ZREMRANGEBYSCORE', P .. z, '-inf', now - ttl)
  end
end
return {promoted, reaped, trimmed}
