-- Record the judge's decision on one experiment and its hypothesis, and queue its follow-up
-- (a replicate or a merge experiment) if any, in one step. Idempotent by `judged`.
-- KEYS[1] the experiment hash   KEYS[2] the hypothesis hash   KEYS[3] judge queue (zset)
-- KEYS[4] event stream   KEYS[5] the follow-up's hash   KEYS[6] its queue
-- KEYS[7] all experiments (zset)   KEYS[8] the task's experiments (zset)   KEYS[9] sequence
-- KEYS[10] the class's runs hash (an agreeing replication adds its pair)
-- KEYS[11] the class's observations (the noise model's runs, by experiment id)
-- ARGV[1] experiment_id   ARGV[2] experiment fields (JSON)   ARGV[3] hypothesis fields
-- (JSON, '' for none)   ARGV[4] event (JSON)   ARGV[5] follow-up id ('' for none)
-- ARGV[6] follow-up fields (JSON)   ARGV[7] follow-up priority   ARGV[8] now
-- ARGV[9] runs field (a code commit, '' for none)   ARGV[10] its runs (JSON list of strings)
-- ARGV[11] {experiment_id: observation JSON} to record ('' for none)
-- Returns 1 decided now, 0 decided before.
if redis.call('HGET', KEYS[1], 'judged') == '1' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
hset_json(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'judged', 1)
hset_json(KEYS[2], ARGV[3])
if ARGV[5] ~= '' then
  enqueue(KEYS[5], ARGV[5], ARGV[6], ARGV[7], KEYS[6], KEYS[7], KEYS[8], KEYS[9], ARGV[8])
end
hset_json(KEYS[11], ARGV[11])
if ARGV[9] ~= '' then redis.call('HSETNX', KEYS[10], ARGV[9], ARGV[10]) end
redis.call('ZREM', KEYS[3], ARGV[1])
add_event(KEYS[4], ARGV[4])
return 1
