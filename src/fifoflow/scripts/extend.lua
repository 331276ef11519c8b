-- extend.lua: renew the leases a worker holds (its heartbeat).
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  lease seconds from now
-- ARGV[2..] pairs: job id, fencing token
-- Returns  {lost ids, cancelled ids}: the jobs whose lease was lost (token no longer
--          current: stop caring about them), and those asked to cancel (stop them).
local P = KEYS[1]
local deadline = now_s() + tonumber(ARGV[1])
local lost, cancelled = {}, {}
for i = 2, #ARGV, 2 do
  local job_id, token = ARGV[i], ARGV[i + 1]
  local cur = read(job_key(P, job_id), F.token, F.status, F.cancel)
  if cur.token == token and cur.status == S.running then
    redis.call('ZADD', P .. K.running, 'XX', deadline, job_id)
    if cur.cancel == '1' then cancelled[#cancelled + 1] = job_id end
  else
    lost[#lost + 1] = job_id
  end
end
return {lost, cancelled}
