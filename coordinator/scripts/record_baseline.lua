-- Count one finished baseline: an ok metric joins the runs of its code on this class; the
-- head becomes ready (explores may lease) once baseline_runs ran ok, or all of them ended
-- and at least one ran ok. Idempotent by the experiment's `judged` flag.
-- KEYS[1] the experiment hash   KEYS[2] the head hash   KEYS[3] the class's runs hash
-- KEYS[4] judge queue (zset)    KEYS[5] event stream   KEYS[6] the class's observations
-- ARGV[1] experiment_id   ARGV[2] the commit it measured   ARGV[3] metric ('' if it failed)
-- ARGV[4] baseline_runs   ARGV[5] now   ARGV[6] event (JSON)
-- ARGV[7] {experiment_id: observation JSON} for the noise model ('' for none)
-- Returns 1 counted now, 0 counted before.
if redis.call('HGET', KEYS[1], 'judged') == '1' then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return 0
end
local count = 0
local raw = redis.call('HGET', KEYS[3], ARGV[2])
local list = {}
if raw then list = cjson.decode(raw) end
hset_json(KEYS[6], ARGV[7])
if ARGV[3] ~= '' then
  list[#list + 1] = ARGV[3]
  redis.call('HSET', KEYS[3], ARGV[2], cjson.encode(list))
end
count = #list
if redis.call('HGET', KEYS[2], 'commit') == ARGV[2] then
  local done = redis.call('HINCRBY', KEYS[2], 'baselines_done', 1)
  local need = tonumber(ARGV[4])
  if count >= need or (done >= need and count >= 1) then
    redis.call('HSET', KEYS[2], 'ready', 1)
  end
end
redis.call('HSET', KEYS[1], 'judged', 1)
redis.call('ZREM', KEYS[4], ARGV[1])
add_event(KEYS[5], ARGV[6])
return 1
