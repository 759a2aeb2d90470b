-- Give a task a hardware class, once: its head (not measured yet) and its baselines; or,
-- forced, point the class's head at another commit (git is the truth) and measure it anew.
-- KEYS[1] the task's classes (zset)   KEYS[2] the head hash   KEYS[3] the class's queue
-- KEYS[4] all experiments (zset)   KEYS[5] the task's experiments (zset)   KEYS[6] sequence
-- ARGV[1] hardware class   ARGV[2] head fields (JSON)   ARGV[3] baseline fields (JSON)
-- ARGV[4] now   ARGV[5] experiment key prefix   ARGV[6] '1' to force
-- ARGV[7..] the baselines' experiment ids
-- Returns 1 when the class was added (or its head reset) now, 0 when it was known.
local classes_key, head_key, queue_key = KEYS[1], KEYS[2], KEYS[3]
local all_key, task_experiments_key, seq_key = KEYS[4], KEYS[5], KEYS[6]
local hardware, head_fields, baseline_fields = ARGV[1], ARGV[2], ARGV[3]
local now, experiment_prefix, force = ARGV[4], ARGV[5], ARGV[6] == '1'
local baseline_ids = {unpack(ARGV, 7)}

local added = redis.call('ZADD', classes_key, 'NX', now, hardware)
if added == 0 and not force then return 0 end
if redis.call('EXISTS', head_key) == 0 or force then
  hset_json(head_key, head_fields)
  redis.call('HSET', head_key, 'ready', 0, 'baselines_done', 0, 'updated_s', now)
end
for _, baseline_id in ipairs(baseline_ids) do
  enqueue(experiment_prefix .. baseline_id, baseline_id, baseline_fields, 0, queue_key, all_key,
    task_experiments_key, seq_key, now)
end
return 1
