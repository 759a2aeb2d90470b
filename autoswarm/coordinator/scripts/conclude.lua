-- Record the judge's decision on one experiment and its hypothesis, and queue its follow-up
-- (a replicate or a merge experiment) if any, in one step. Idempotent by `judged`.
-- KEYS[1] the experiment hash   KEYS[2] judge queue (zset)   KEYS[3] event stream
-- Then, each only when its part is used, in this order:
-- the hypothesis hash (with hypothesis fields);
-- the follow-up's hash, its queue, all experiments (zset), the task's experiments (zset) and
-- the sequence (with a follow-up);
-- the class's runs hash (with a runs field: an agreeing replication adds its pair);
-- the class's observations (with observations: the noise model's runs, by experiment id).
-- ARGV[1] experiment_id   ARGV[2] experiment fields (JSON)   ARGV[3] hypothesis fields
-- (JSON, '' for none)   ARGV[4] event (JSON)   ARGV[5] follow-up id ('' for none)
-- ARGV[6] follow-up fields (JSON)   ARGV[7] follow-up priority   ARGV[8] now
-- ARGV[9] runs field (a code commit, '' for none)   ARGV[10] its runs (JSON list of strings)
-- ARGV[11] {experiment_id: observation JSON} to record ('' for none)
-- Returns 1 decided now, 0 decided before.
local experiment_key, judge_key, events_key = KEYS[1], KEYS[2], KEYS[3]
local experiment_id, experiment_fields, hypothesis_fields = ARGV[1], ARGV[2], ARGV[3]
local event, follow_id, follow_fields, follow_priority = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local now, runs_field, runs, observations = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local optional = optional_keys(4)
local hypothesis_key = optional(hypothesis_fields ~= '')
local follow_key, follow_queue, all_key, task_experiments_key, seq_key =
  optional(follow_id ~= '', 5)
local runs_key = optional(runs_field ~= '')
local observations_key = optional(observations ~= '')

if redis.call('HGET', experiment_key, 'judged') == '1' then
  redis.call('ZREM', judge_key, experiment_id)
  return 0
end
hset_json(experiment_key, experiment_fields)
redis.call('HSET', experiment_key, 'judged', 1)
if hypothesis_key then hset_json(hypothesis_key, hypothesis_fields) end
if follow_key then
  enqueue(follow_key, follow_id, follow_fields, follow_priority, follow_queue, all_key,
    task_experiments_key, seq_key, now)
end
if observations_key then hset_json(observations_key, observations) end
if runs_key then redis.call('HSETNX', runs_key, runs_field, runs) end
redis.call('ZREM', judge_key, experiment_id)
add_event(events_key, event)
return 1
