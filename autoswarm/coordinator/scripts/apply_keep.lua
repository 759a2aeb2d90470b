-- A kept change, already committed on the lineage branch, becomes the head in Redis: new
-- commit and bundle, stats seeded from the candidate's and the replicate's runs, fresh
-- baselines queued, the hypothesis and both experiments marked kept. Idempotent: a head
-- already at this commit is left alone and the rest is set again to the same values.
-- KEYS[1] the head hash   KEYS[2] the class's runs hash   KEYS[3] the candidate experiment
-- KEYS[4] the replicate experiment   KEYS[5] judge queue   KEYS[6] event stream
-- KEYS[7] the explored marker of the kept code   KEYS[8] class queue
-- KEYS[9] all experiments (zset)   KEYS[10] the task's experiments (zset)   KEYS[11] sequence
-- KEYS[12] the class's observations (the candidate's runs, now the new head's)
-- KEYS[13] the hypothesis hash (only with hypothesis fields)
-- ARGV[1] new head commit   ARGV[2] head fields (JSON)   ARGV[3] the two runs (JSON list)
-- ARGV[4] hypothesis fields (JSON, '' for none)   ARGV[5] experiment fields (JSON, both
-- experiments)   ARGV[6] replicate experiment_id   ARGV[7] candidate experiment_id
-- ARGV[8] event (JSON)   ARGV[9] now   ARGV[10] baseline fields (JSON)
-- ARGV[11] experiment key prefix   ARGV[12] {experiment_id: observation JSON}
-- ARGV[13..] the new baselines' experiment ids
-- Returns 1 when the head moved now, 0 when it was there already.
local head_key, runs_key, candidate_key, replicate_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local judge_key, events_key, explored_key, queue_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local all_key, task_experiments_key, seq_key = KEYS[9], KEYS[10], KEYS[11]
local observations_key = KEYS[12]
local commit, head_fields, runs, hypothesis_fields = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local experiment_fields, replicate_id, candidate_id = ARGV[5], ARGV[6], ARGV[7]
local event, now, baseline_fields, experiment_prefix = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local observations = ARGV[12]
local baseline_ids = {unpack(ARGV, 13)}
local optional = optional_keys(13)
local hypothesis_key = optional(hypothesis_fields ~= '')

local moved = 0
if redis.call('HGET', head_key, 'commit') ~= commit then
  hset_json(head_key, head_fields)
  redis.call('HSET', head_key, 'commit', commit, 'ready', 1, 'baselines_done', 0,
    'updated_s', now)
  if redis.call('HEXISTS', runs_key, commit) == 0 then
    redis.call('HSET', runs_key, commit, runs)
  end
  add_event(events_key, event)
  moved = 1
end
hset_json(observations_key, observations)
redis.call('SET', explored_key, candidate_id, 'NX')
if hypothesis_key then hset_json(hypothesis_key, hypothesis_fields) end
hset_json(candidate_key, experiment_fields)
hset_json(replicate_key, experiment_fields)
redis.call('HSET', replicate_key, 'judged', 1)
redis.call('ZREM', judge_key, replicate_id)
for _, baseline_id in ipairs(baseline_ids) do
  enqueue(experiment_prefix .. baseline_id, baseline_id, baseline_fields, 0, queue_key, all_key,
    task_experiments_key, seq_key, now)
end
return moved
