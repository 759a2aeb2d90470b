-- Count one finished baseline: an ok metric joins the runs of its code on this class; the
-- head becomes ready (explores may lease) once baseline_runs ran ok, or all of them ended
-- and at least one ran ok. Idempotent by the experiment's `judged` flag.
-- KEYS[1] the experiment hash   KEYS[2] the head hash   KEYS[3] the class's runs hash
-- KEYS[4] judge queue (zset)    KEYS[5] event stream   KEYS[6] the class's observations
-- ARGV[1] experiment_id   ARGV[2] the commit it measured   ARGV[3] metric ('' if it failed)
-- ARGV[4] baseline_runs   ARGV[5] now   ARGV[6] event (JSON)
-- ARGV[7] {experiment_id: observation JSON} for the noise model ('' for none)
-- Returns 1 counted now, 0 counted before.
local experiment_key, head_key, runs_key = KEYS[1], KEYS[2], KEYS[3]
local judge_key, events_key, observations_key = KEYS[4], KEYS[5], KEYS[6]
local experiment_id, commit, metric, need = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local event, observations = ARGV[6], ARGV[7]

if redis.call('HGET', experiment_key, 'judged') == '1' then
  redis.call('ZREM', judge_key, experiment_id)
  return 0
end
local raw = redis.call('HGET', runs_key, commit)
local list = {}
if raw then list = cjson.decode(raw) end
hset_json(observations_key, observations)
if metric ~= '' then
  list[#list + 1] = metric
  redis.call('HSET', runs_key, commit, cjson.encode(list))
end
local count = #list
if redis.call('HGET', head_key, 'commit') == commit then
  local done = redis.call('HINCRBY', head_key, 'baselines_done', 1)
  if count >= need or (done >= need and count >= 1) then
    redis.call('HSET', head_key, 'ready', 1)
  end
end
redis.call('HSET', experiment_key, 'judged', 1)
redis.call('ZREM', judge_key, experiment_id)
add_event(events_key, event)
return 1
