-- Withdraw an experiment that is no longer needed (a merge's replicate, queued alongside it,
-- once the merge turned out not better): out of its queue or its lease, done, judged, with
-- its verdict and reason. A lease on it is marked `cancel`: the worker running it is told so at
-- its next heartbeat and stops; a report under that lease is stale and changes nothing.
-- KEYS[1] the experiment hash   KEYS[2] leases (zset)   KEYS[3] judge queue   KEYS[4] events
-- ARGV[1] experiment_id   ARGV[2] verdict   ARGV[3] reason   ARGV[4] now   ARGV[5] event (JSON)
-- Returns 1 withdrawn now; 0 when it had finished (or was withdrawn) already.
local f = redis.call('HMGET', KEYS[1], 'state', 'queue')
if f[1] ~= 'queued' and f[1] ~= 'leased' then return 0 end
if f[2] then redis.call('ZREM', f[2], ARGV[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'done', 'judged', 1, 'verdict', ARGV[2], 'reason', ARGV[3],
  'finished_s', ARGV[4], 'lease_deadline', '')
if f[1] == 'leased' then redis.call('HSET', KEYS[1], 'cancel', 1) end
add_event(KEYS[4], ARGV[5])
return 1
