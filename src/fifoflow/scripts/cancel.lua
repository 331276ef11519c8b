-- cancel.lua: a queued or delayed job becomes cancelled.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  job id
-- ARGV[2]  ttl seconds of finished records
-- Returns  the job's status after the call ('' if there is no such job)
local P = KEYS[1]
local id = ARGV[1]
local jk = P .. 'job:' .. id
local f = redis.call('HMGET', jk, 'status', 'pool', 'key')
if not f[1] then return '' end
if f[1] == 'queued' then
  redis.call('ZREM', P .. 'ready:' .. f[2], id)
elseif f[1] == 'delayed' then
  redis.call('ZREM', P .. 'delayed', id)
  redis.call('ZREM', P .. 'retry', id)
else
  return f[1]
end
finish(P, id, 'cancelled', now_s(), ARGV[2], f[3])
return 'cancelled'
