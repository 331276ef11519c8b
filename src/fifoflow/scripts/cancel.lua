-- cancel.lua: a queued, delayed or waiting job becomes cancelled (and the jobs waiting on
-- it settle: dead, unless they asked to run anyway). A running job is marked (F.cancel) and
-- its worker told (channel K.cancels): it stops the attempt, whose report then records
-- the job cancelled, never retried (a success it reports first stands); a job whose worker
-- is lost meanwhile is cancelled when its lease is reaped.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  job id     ARGV[2] ttl seconds of finished records
-- Returns  the job's status after the call ('' if there is no such job; 'cancelling' for
--          a running job)
local P = KEYS[1]
local job_id, ttl = ARGV[1], ARGV[2]
local jk = job_key(P, job_id)
local cur = read(jk, F.status, F.pool, F.key, F.result_ttl, F.children)
if not cur.status then return '' end
if cur.status == S.queued then
  redis.call('ZREM', P .. K.ready .. cur.pool, job_id)
elseif cur.status == S.delayed then
  redis.call('ZREM', P .. K.delayed, job_id)
  redis.call('ZREM', P .. K.retry, job_id)
elseif cur.status == S.waiting then
  redis.call('ZREM', P .. K.waiting, job_id)
elseif cur.status == S.running then
  redis.call('HSET', jk, F.cancel, '1')
  redis.call('PUBLISH', P .. K.cancels, job_id)
  return 'cancelling'
else
  return cur.status
end
finish(P, job_id, S.cancelled, now_s(), ttl, cur)
count(P, E.cancelled, cur.pool)
return S.cancelled
