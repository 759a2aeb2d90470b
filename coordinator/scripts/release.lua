-- Hand a lease back: the experiment is queued again at its old place, no attempt counted;
-- the lease's token is spent (a report or heartbeat under it is stale from now on).
-- KEYS[1] the experiment hash   KEYS[2] leases (zset by deadline)
-- ARGV[1] experiment_id   ARGV[2] worker_id   ARGV[3] fencing_token
-- Returns 1 released; -1 unknown; -2 another worker's; -3 stale token.
local check = check_lease(KEYS[1], ARGV[2], ARGV[3])
if check ~= 1 then return check end
local f = redis.call('HMGET', KEYS[1], 'queue', 'score')
redis.call('HSET', KEYS[1], 'state', 'queued', 'lease_deadline', '')
redis.call('HINCRBY', KEYS[1], 'fencing_token', 1)  -- handed back: a late report is stale
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', f[1], f[2], ARGV[1])
return 1
