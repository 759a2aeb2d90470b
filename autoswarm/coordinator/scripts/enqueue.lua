-- Queue one experiment, idempotently by its id.
-- KEYS[1] the experiment hash   KEYS[2] its queue        KEYS[3] all experiments (zset)
-- KEYS[4] the task's experiments (zset)                   KEYS[5] the sequence counter
-- ARGV[1] experiment_id   ARGV[2] its fields (JSON object)   ARGV[3] priority (0..2)
-- ARGV[4] now (unix s)
-- Returns 1 when queued, 0 when that experiment already exists.
local experiment_key, queue_key, all_key = KEYS[1], KEYS[2], KEYS[3]
local task_experiments_key, seq_key = KEYS[4], KEYS[5]
local experiment_id, fields, priority, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

return enqueue(experiment_key, experiment_id, fields, priority, queue_key, all_key,
  task_experiments_key, seq_key, now)
