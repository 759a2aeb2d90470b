-- Lease the first eligible queued experiment for one worker (leasing.lua: lowest score,
-- priority then first in first out, across its class's queue and the any-class queue, of
-- those it may take). Increments the fencing token and records the deadline.
-- KEYS[1] this class's queue   KEYS[2] the any-class queue   KEYS[3] leases (zset by deadline)
-- KEYS[4] this class's owners (zset by the last lease each got)
-- KEYS[5] the workers that lost trust (set)
-- ARGV[1] worker_id   ARGV[2] owner   ARGV[3] hardware class   ARGV[4] now   ARGV[5] lease_ttl_s
-- ARGV[6] experiment key prefix   ARGV[7] head key prefix   ARGV[8] entries scanned per queue
-- ARGV[9] replicate_wait_s: after this long queued, an experiment that excludes this worker
--         (or owner) may go to it anyway (a swarm of one still replicates, on itself)
-- Returns {experiment_id, fencing_token, kind, task_id, bundle_hash}, or nil when nothing is
-- eligible.
-- An idle poll writes nothing (no append-only file fsync per poll).
local class_queue, any_queue, leases_key, owners_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local distrusted_key = KEYS[5]
local worker_id, owner, hardware, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ttl_s, experiment_prefix, head_prefix = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local scan, replicate_wait_s = tonumber(ARGV[8]), tonumber(ARGV[9])

local w = {
  id = worker_id, owner = owner, hardware = hardware, now = now,
  replicate_wait_s = replicate_wait_s, exp_prefix = experiment_prefix, head_prefix = head_prefix,
  owners = owners_key, active_s = math.max(300, 5 * ttl_s),
  distrusted = redis.call('SISMEMBER', distrusted_key, worker_id) == 1,
}
local experiment_id, queue = choose(w, class_queue, any_queue, scan, '+inf')
if not experiment_id then return nil end
return take(w, experiment_id, queue, leases_key, owners_key, ttl_s)
