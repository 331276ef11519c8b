-- release.lua: give claimed jobs back, at their original places (a graceful stop), or
-- after a delay (a worker that may not run a job now). The attempt is not counted: the
-- job did not run to an outcome.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  delay seconds (0: back in line at once)
-- ARGV[2..] pairs: job id, fencing token
-- Returns  the number of jobs put back
local P = KEYS[1]
local delay = tonumber(ARGV[1])
local now = now_s()
local count = 0
for i = 2, #ARGV, 2 do
  local job_id, token = ARGV[i], ARGV[i + 1]
  local jk = job_key(P, job_id)
  local cur = read(jk, F.token, F.status, F.pool, F.priority)
  if cur.token == token and cur.status == S.running and token ~= '' then
    redis.call('ZREM', P .. K.running, job_id)
    redis.call('HINCRBY', jk, F.attempts, -1)
    redis.call('HSET', jk, F.token, '', F.worker, '')
    redis.call('HDEL', jk, F.started_at)
    if delay > 0 then
      local pool = schedule(P, K.retry, job_id, now + delay, cur.pool)
      if pool then wake(P, pool) end
    else
      enqueue_ready(P, job_id, cur.pool, cur.priority, now)
    end
    count = count + 1
  end
end
return count
