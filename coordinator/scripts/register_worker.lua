-- Register (or register again) a worker slot, within its token's bounds: at most ARGV[6]
-- workers and ARGV[7] hardware classes per token (a new one past a bound is refused; one
-- the token has already is always fine). A class a token brought counts for good: its
-- lineage branches and baselines stay.
-- KEYS[1] the worker hash   KEYS[2] workers (zset)   KEYS[3] the class's owners (zset)
-- KEYS[4] the token's workers (set)   KEYS[5] the token's hardware classes (set)
-- ARGV[1] worker_id   ARGV[2] fields (JSON)   ARGV[3] registered_s   ARGV[4] hardware class
-- ARGV[5] owner   ARGV[6] max workers per token   ARGV[7] max classes per token
-- Returns 1 registered; -1 too many workers; -2 too many hardware classes.
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 0
    and redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[6]) then
  return -1
end
if redis.call('SISMEMBER', KEYS[5], ARGV[4]) == 0
    and redis.call('SCARD', KEYS[5]) >= tonumber(ARGV[7]) then
  return -2
end
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[4])
hset_json(KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5])
return 1
