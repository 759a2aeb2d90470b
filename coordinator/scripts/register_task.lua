-- Record a task once: its spec, first commit and bundle; mark the first code as explored.
-- KEYS[1] the task hash   KEYS[2] all tasks (zset)   KEYS[3] the explored marker of its code
-- ARGV[1] task_id   ARGV[2] task fields (JSON)   ARGV[3] now   ARGV[4] its bundle hash
-- Returns 1 when recorded now; 0 when the same task was recorded before; -1 when a task of
-- that name was recorded with other files.
local existing = redis.call('HGET', KEYS[1], 'bundle_hash')
if existing then
  if existing == ARGV[4] then return 0 end
  return -1
end
hset_json(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'task_id', ARGV[1], 'registered_s', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SET', KEYS[3], 'head', 'NX')
return 1
