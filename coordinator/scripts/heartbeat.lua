-- Renew a lease: only the current fencing token of the worker holding it. A lease whose
-- experiment was withdrawn while it ran (withdraw.lua) answers cancel to its holder alone.
-- KEYS[1] the experiment hash   KEYS[2] leases (zset by deadline)
-- ARGV[1] experiment_id   ARGV[2] worker_id   ARGV[3] fencing_token   ARGV[4] now
-- ARGV[5] lease_ttl_s
-- Returns {1, cancel (0/1)} renewed; {-1} unknown; {-2} another worker's; {-3} stale token.
local f = redis.call('HMGET', KEYS[1], 'cancel', 'worker_id', 'fencing_token')
if f[1] == '1' and f[2] == ARGV[2] and tonumber(f[3]) == tonumber(ARGV[3]) then return {1, 1} end
local check = check_lease(KEYS[1], ARGV[2], ARGV[3])
if check ~= 1 then return {check} end
local deadline = tonumber(ARGV[4]) + tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'lease_deadline', deadline)
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return {1, 0}
