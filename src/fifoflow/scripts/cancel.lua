-- cancel.lua: a queued, delayed or waiting job becomes cancelled (and the jobs waiting on
-- it settle: dead, unless they asked to run anyway).
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  job id     ARGV[2] ttl seconds of finished records
-- Returns  the job's status after the call ('' if there is no such job)
local P = KEYS[1]
local job_id, ttl = ARGV[1], ARGV[2]
local cur = read(job_key(P, job_id), F.status, F.pool, F.key, F.result_ttl, F.children)
if not cur.status then return '' end
if cur.status == S.queued then
  redis.call('ZREM', P .. K.ready .. cur.pool, job_id)
elseif cur.status == S.delayed then
  redis.call('ZREM', P .. K.delayed, job_id)
  redis.call('ZREM', P .. K.retry, job_id)
elseif cur.status == S.waiting then
  redis.call('ZREM', P .. K.waiting, job_id)
else
  return cur.status
end
finish(P, job_id, S.cancelled, now_s(), ttl, cur)
count(P, E.cancelled, cur.pool)
return S.cancelled
