-- claim.lua: promote due jobs, reap expired leases, then claim up to N jobs.
-- KEYS[1]  queue prefix "ff:{QUEUE}:"
-- ARGV[1..] the claim request: worker, lease seconds, N, nonce, max_lost, ttl, refill,
--           resend, res ('1': capacity declared, res_claim in _resources.lua), pools...
--           (see claim_request in _common.lua)
-- Returns  {next_event_seconds, then 10 fields a job: id, target, params, timeout, attempts,
--           gather mode ('' | 'results' | 'input'), gathered results (JSON array text),
--           share of resources (JSON, '' if none), tags (JSON array text or ''),
--           queued at (Unix seconds)}
local P = KEYS[1]
local req = claim_request(ARGV, 1)
local now = now_s()
housekeep(P, now, true, req.policy)
local jobs = req.res and res_claim(P, req, now) or claim(P, req, now)
table.insert(jobs, 1, tostring(next_event(P, now)))
return jobs
