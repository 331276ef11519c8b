-- claim.lua: promote due jobs, reap expired leases, then claim up to N jobs.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1]  worker name
-- ARGV[2]  lease seconds
-- ARGV[3]  N, most jobs to claim
-- ARGV[4..] pools served
-- Returns  {next_event_seconds, id, token, target, params, timeout, attempts, ...}
local P = KEYS[1]
local pools = {}
for i = 4, #ARGV do pools[#pools + 1] = ARGV[i] end
local now = now_s()
housekeep(P, now, true)
local jobs = claim(P, ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), pools, now)
table.insert(jobs, 1, tostring(next_event(P, now)))
return jobs
