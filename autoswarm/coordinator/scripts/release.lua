-- Hand a lease back: the experiment is queued again at its old place, no attempt counted;
-- the lease's token is spent (a report or heartbeat under it is stale from now on).
-- KEYS[1] the experiment hash   KEYS[2] leases (zset by deadline)
-- ARGV[1] experiment_id   ARGV[2] worker_id   ARGV[3] fencing_token
-- Returns 1 released; -1 unknown; -2 another worker's; -3 stale token.
local experiment_key, leases_key = KEYS[1], KEYS[2]
local experiment_id, worker_id, token = ARGV[1], ARGV[2], ARGV[3]

local check = check_lease(experiment_key, worker_id, token)
if check ~= 1 then return check end
local f = redis.call('HMGET', experiment_key, 'queue', 'score')
redis.call('HSET', experiment_key, 'state', 'queued', 'lease_deadline', '')
redis.call('HINCRBY', experiment_key, 'fencing_token', 1)  -- handed back: a late report is stale
redis.call('ZREM', leases_key, experiment_id)
redis.call('ZADD', f[1], f[2], experiment_id)
return 1
