-- Claim or keep the coordinator's leadership: the one process of several serving one Redis
-- that runs the background work (reaper, judge loop, indexer).
-- KEYS[1] the leader key
-- ARGV[1] this process's token   ARGV[2] how long the claim holds (ms)   ARGV[3] "1" to let go
-- Returns 1 when this process leads (until the claim lapses), 0 when another one does.
local holder = redis.call('GET', KEYS[1])
if ARGV[3] == '1' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
