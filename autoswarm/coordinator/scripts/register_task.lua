-- Record a task once: its spec, first commit and bundle; mark the first code as explored.
-- KEYS[1] the task hash   KEYS[2] all tasks (zset)   KEYS[3] the explored marker of its code
-- ARGV[1] task_id   ARGV[2] task fields (JSON)   ARGV[3] now   ARGV[4] its bundle hash
-- Returns 1 when recorded now; 0 when the same task was recorded before; -1 when a task of
-- that name was recorded with other files.
local task_key, tasks_key, explored_key = KEYS[1], KEYS[2], KEYS[3]
local task_id, fields, now, bundle_hash = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local existing = redis.call('HGET', task_key, 'bundle_hash')
if existing then
  if existing == bundle_hash then return 0 end
  return -1
end
hset_json(task_key, fields)
redis.call('HSET', task_key, 'task_id', task_id, 'registered_s', now)
redis.call('ZADD', tasks_key, now, task_id)
redis.call('SET', explored_key, 'head', 'NX')
return 1
