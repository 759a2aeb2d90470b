-- Register (or register again) a worker slot, within its token's bounds: at most ARGV[6]
-- workers and ARGV[7] hardware classes per token (a new one past a bound is refused; one
-- the token has already is always fine). A class a token brought counts for good: its
-- lineage branches and baselines stay.
-- KEYS[1] the worker hash   KEYS[2] workers (zset)   KEYS[3] the class's owners (zset)
-- KEYS[4] the token's workers (set)   KEYS[5] the token's hardware classes (set)
-- ARGV[1] worker_id   ARGV[2] fields (JSON)   ARGV[3] registered_s   ARGV[4] hardware class
-- ARGV[5] owner   ARGV[6] max workers per token   ARGV[7] max classes per token
-- Returns 1 registered; -1 too many workers; -2 too many hardware classes.
local worker_key, workers_key, owners_key = KEYS[1], KEYS[2], KEYS[3]
local token_workers_key, token_classes_key = KEYS[4], KEYS[5]
local worker_id, fields, registered_s, hardware = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local owner, max_workers, max_classes = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])

if redis.call('SISMEMBER', token_workers_key, worker_id) == 0
    and redis.call('SCARD', token_workers_key) >= max_workers then
  return -1
end
if redis.call('SISMEMBER', token_classes_key, hardware) == 0
    and redis.call('SCARD', token_classes_key) >= max_classes then
  return -2
end
redis.call('SADD', token_workers_key, worker_id)
redis.call('SADD', token_classes_key, hardware)
hset_json(worker_key, fields)
redis.call('ZADD', workers_key, registered_s, worker_id)
redis.call('ZADD', owners_key, registered_s, owner)
return 1
