-- A kept change, already committed on the lineage branch, becomes the head in Redis: new
-- commit and bundle, stats seeded from the candidate's and the replicate's runs, fresh
-- baselines queued, the hypothesis and both experiments marked kept. Idempotent: a head
-- already at this commit is left alone and the rest is set again to the same values.
-- KEYS[1] the head hash   KEYS[2] the class's runs hash   KEYS[3] the hypothesis hash
-- KEYS[4] the candidate experiment   KEYS[5] the replicate experiment   KEYS[6] judge queue
-- KEYS[7] event stream   KEYS[8] the explored marker of the kept code   KEYS[9] class queue
-- KEYS[10] all experiments (zset)   KEYS[11] the task's experiments (zset)   KEYS[12] sequence
-- KEYS[13] the class's observations (the candidate's runs, now the new head's)
-- ARGV[1] new head commit   ARGV[2] head fields (JSON)   ARGV[3] the two runs (JSON list)
-- ARGV[4] hypothesis fields (JSON)   ARGV[5] experiment fields (JSON, both experiments)
-- ARGV[6] replicate experiment_id   ARGV[7] candidate experiment_id   ARGV[8] event (JSON)
-- ARGV[9] now   ARGV[10] baseline fields (JSON)   ARGV[11] experiment key prefix
-- ARGV[12] {experiment_id: observation JSON}   ARGV[13..] the new baselines' experiment ids
-- Returns 1 when the head moved now, 0 when it was there already.
local moved = 0
if redis.call('HGET', KEYS[1], 'commit') ~= ARGV[1] then
  hset_json(KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[1], 'commit', ARGV[1], 'ready', 1, 'baselines_done', 0,
    'updated_s', ARGV[9])
  if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  end
  add_event(KEYS[7], ARGV[8])
  moved = 1
end
hset_json(KEYS[13], ARGV[12])
redis.call('SET', KEYS[8], ARGV[7], 'NX')
hset_json(KEYS[3], ARGV[4])
hset_json(KEYS[4], ARGV[5])
hset_json(KEYS[5], ARGV[5])
redis.call('HSET', KEYS[5], 'judged', 1)
redis.call('ZREM', KEYS[6], ARGV[6])
for i = 13, #ARGV do
  enqueue(ARGV[11] .. ARGV[i], ARGV[i], ARGV[10], 0, KEYS[9], KEYS[10], KEYS[11], KEYS[12],
    ARGV[9])
end
return moved
