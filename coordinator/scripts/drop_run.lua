-- Take one run (a baseline by a worker that lost trust) out of a code's runs on a class;
-- the head's readiness is left as it is (a replacement baseline is queued with this).
-- KEYS[1] the class's runs hash   KEYS[2] the baseline's experiment hash
-- KEYS[3] the class's observations
-- ARGV[1] the code's commit   ARGV[2] the metric, as recorded   ARGV[3] experiment_id
-- Returns 1 removed now, 0 when it was not there (or removed before).
if redis.call('HGET', KEYS[2], 'run_dropped') == '1' then return 0 end
redis.call('HDEL', KEYS[3], ARGV[3])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local list = cjson.decode(raw)
for i = 1, #list do
  if list[i] == ARGV[2] then
    table.remove(list, i)
    if #list == 0 then  -- cjson writes an empty table as {}: no runs is no field
      redis.call('HDEL', KEYS[1], ARGV[1])
    else
      redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(list))
    end
    redis.call('HSET', KEYS[2], 'run_dropped', 1)
    return 1
  end
end
return 0
