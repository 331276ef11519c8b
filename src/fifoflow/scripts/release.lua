-- release.lua: give claimed jobs back, at their original places (a graceful stop).
-- The attempt is not counted: the job did not run to an outcome.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1..] pairs: job id, fencing token
-- Returns  the number of jobs put back
local P = KEYS[1]
local count = 0
for i = 1, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local jk = P .. 'job:' .. id
  local cur = redis.call('HMGET', jk, 'token', 'status', 'pool', 'priority')
  if cur[1] == token and cur[2] == 'running' and token ~= '' then
    redis.call('ZREM', P .. 'running', id)
    redis.call('HINCRBY', jk, 'attempts', -1)
    redis.call('HSET', jk, 'token', '', 'worker', '')
    redis.call('HDEL', jk, 'started_at')
    enqueue_ready(P, id, cur[3], cur[4])
    count = count + 1
  end
end
return count
