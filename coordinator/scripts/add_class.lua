-- Give a task a hardware class, once: its head (not measured yet) and its baselines; or,
-- forced, point the class's head at another commit (git is the truth) and measure it anew.
-- KEYS[1] the task's classes (zset)   KEYS[2] the head hash   KEYS[3] the class's queue
-- KEYS[4] all experiments (zset)   KEYS[5] the task's experiments (zset)   KEYS[6] sequence
-- ARGV[1] hardware class   ARGV[2] head fields (JSON)   ARGV[3] baseline fields (JSON)
-- ARGV[4] now   ARGV[5] experiment key prefix   ARGV[6] '1' to force
-- ARGV[7..] the baselines' experiment ids
-- Returns 1 when the class was added (or its head reset) now, 0 when it was known.
local added = redis.call('ZADD', KEYS[1], 'NX', ARGV[4], ARGV[1])
if added == 0 and ARGV[6] ~= '1' then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 or ARGV[6] == '1' then
  hset_json(KEYS[2], ARGV[2])
  redis.call('HSET', KEYS[2], 'ready', 0, 'baselines_done', 0, 'updated_s', ARGV[4])
end
for i = 7, #ARGV do
  enqueue(ARGV[5] .. ARGV[i], ARGV[i], ARGV[3], 0, KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[4])
end
return 1
