-- Take one run (a baseline by a worker that lost trust) out of a code's runs on a class;
-- the head's readiness is left as it is (a replacement baseline is queued with this).
-- KEYS[1] the class's runs hash   KEYS[2] the baseline's experiment hash
-- KEYS[3] the class's observations
-- ARGV[1] the code's commit   ARGV[2] the metric, as recorded   ARGV[3] experiment_id
-- Returns 1 removed now, 0 when it was not there (or removed before).
local runs_key, experiment_key, observations_key = KEYS[1], KEYS[2], KEYS[3]
local commit, metric, experiment_id = ARGV[1], ARGV[2], ARGV[3]

if redis.call('HGET', experiment_key, 'run_dropped') == '1' then return 0 end
redis.call('HDEL', observations_key, experiment_id)
local raw = redis.call('HGET', runs_key, commit)
if not raw then return 0 end
local list = cjson.decode(raw)
for i = 1, #list do
  if list[i] == metric then
    table.remove(list, i)
    if #list == 0 then  -- cjson writes an empty table as {}: no runs is no field
      redis.call('HDEL', runs_key, commit)
    else
      redis.call('HSET', runs_key, commit, cjson.encode(list))
    end
    redis.call('HSET', experiment_key, 'run_dropped', 1)
    return 1
  end
end
return 0
