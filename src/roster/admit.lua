-- Admits one connection to a (user, workspace) roster and evicts the oldest beyond
-- the limit, atomically (Redis runs a script alone).
-- KEYS[1] the roster (a sorted set); ARGV[1] the member; ARGV[2] the limit (>= 1);
-- ARGV[3] the key's TTL in seconds. Returns the evicted members, oldest first.
local key = KEYS[1]
local limit = tonumber(ARGV[2])
-- The score is Redis's clock, not the instance's: one clock for every instance, so
-- clock skew between hosts cannot make a new connection look older than the ones
-- it should replace. Forced above the newest score, so the newcomer always ranks
-- last even if Redis's clock steps back. (Microseconds since 1970 fit a double
-- exactly until the year 2255.)
local time = redis.call('TIME')
local score = tonumber(time[1]) * 1000000 + tonumber(time[2])
local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if newest[2] ~= nil and tonumber(newest[2]) >= score then
  score = tonumber(newest[2]) + 1
end
-- NX: admitting a member again keeps its place (and only refreshes the TTL).
redis.call('ZADD', key, 'NX', score, ARGV[1])
local evicted = redis.call('ZRANGE', key, 0, -(limit + 1))
if #evicted > 0 then
  redis.call('ZREMRANGEBYRANK', key, 0, #evicted - 1)
end
redis.call('EXPIRE', key, ARGV[3])
return evicted
