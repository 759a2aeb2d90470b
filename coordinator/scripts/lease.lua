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
local w = {
  id = ARGV[1], owner = ARGV[2], hardware = ARGV[3], now = tonumber(ARGV[4]),
  replicate_wait_s = tonumber(ARGV[9]), exp_prefix = ARGV[6], head_prefix = ARGV[7],
  owners = KEYS[4], active_s = math.max(300, 5 * tonumber(ARGV[5])),
  distrusted = redis.call('SISMEMBER', KEYS[5], ARGV[1]) == 1,
}
local experiment_id, queue = choose(w, KEYS[1], KEYS[2], tonumber(ARGV[8]), '+inf')
if not experiment_id then return nil end
return take(w, experiment_id, queue, KEYS[3], KEYS[4], tonumber(ARGV[5]))
