-- Withdraw an experiment that is no longer needed (a merge's replicate, queued alongside it,
-- once the merge turned out not better): out of its queue or its lease, done, judged, with
-- its verdict and reason. A lease on it is marked `cancel`: the worker running it is told so at
-- its next heartbeat and stops; a report under that lease is stale and changes nothing.
-- KEYS[1] the experiment hash   KEYS[2] leases (zset)   KEYS[3] judge queue   KEYS[4] events
-- ARGV[1] experiment_id   ARGV[2] verdict   ARGV[3] reason   ARGV[4] now   ARGV[5] event (JSON)
-- Returns 1 withdrawn now; 0 when it had finished (or was withdrawn) already.
local experiment_key, leases_key, judge_key, events_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local experiment_id, verdict, reason, now, event = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local f = redis.call('HMGET', experiment_key, 'state', 'queue')
if f[1] ~= 'queued' and f[1] ~= 'leased' then return 0 end
if f[2] then redis.call('ZREM', f[2], experiment_id) end
redis.call('ZREM', leases_key, experiment_id)
redis.call('ZREM', judge_key, experiment_id)
redis.call('HSET', experiment_key, 'state', 'done', 'judged', 1, 'verdict', verdict,
  'reason', reason, 'finished_s', now, 'lease_deadline', '')
if f[1] == 'leased' then redis.call('HSET', experiment_key, 'cancel', 1) end
add_event(events_key, event)
return 1
