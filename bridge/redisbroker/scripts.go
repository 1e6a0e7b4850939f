package redisbroker

import "github.com/redis/go-redis/v9"

// The cluster state lives in these keys (P is WSBRIDGE_CLUSTER_PREFIX):
//
//	P:conns            hash   connection id → its record (bridge.ConnRecord as JSON)
//	P:node:<node>      set    the ids of a node's records
//	P:user:<user>      set    the ids of a user's records
//	P:chan:<channel>   set    the ids of a channel's records
//	P:users, P:chans   hash   user / channel → its number of records (for the totals)
//	P:nodes            zset   node → its last heartbeat (Beat), in ms of the Redis server's clock
//	P:running          zset   node → when its Run's presence expires (Nodes, /v1/stats)
//	P:orphans:<node>   hash   id → record: connections node owes a close webhook for
//	P:reaped:<node>    set    ids claimed from node while it was silent (for its next beat)
//	P:gone:<node>      set    the same ids once its beat reported them: node may still write
//	                          them (a change queued before it closed them); kept a day
//
// Every change is one Lua script, so that a record and its indexes never disagree, and the
// liveness scripts read the Redis server's clock (TIME), so that the nodes' clocks need not
// agree. The scripts build key names from the prefix, which a Redis Cluster would refuse:
// the broker needs one Redis (with replicas and Sentinel if wanted), as its pub/sub does.

// lib is prepended to every script that touches the indexes.
const lib = `
local P = ARGV[1]
local function unindex(id, rec)
  local r = cjson.decode(rec)
  redis.call('SREM', P..':node:'..r.node, id)
  if r.user_id ~= nil and r.user_id ~= '' then
    redis.call('SREM', P..':user:'..r.user_id, id)
    if redis.call('HINCRBY', P..':users', r.user_id, -1) <= 0 then redis.call('HDEL', P..':users', r.user_id) end
  end
  if type(r.channels) == 'table' then
    for _, ch in ipairs(r.channels) do
      redis.call('SREM', P..':chan:'..ch, id)
      if redis.call('HINCRBY', P..':chans', ch, -1) <= 0 then redis.call('HDEL', P..':chans', ch) end
    end
  end
  redis.call('HDEL', P..':conns', id)
end
local function index(id, rec)
  local r = cjson.decode(rec)
  redis.call('HSET', P..':conns', id, rec)
  redis.call('SADD', P..':node:'..r.node, id)
  if r.user_id ~= nil and r.user_id ~= '' then
    redis.call('SADD', P..':user:'..r.user_id, id)
    redis.call('HINCRBY', P..':users', r.user_id, 1)
  end
  if type(r.channels) == 'table' then
    for _, ch in ipairs(r.channels) do
      redis.call('SADD', P..':chan:'..ch, id)
      redis.call('HINCRBY', P..':chans', ch, 1)
    end
  end
end
local function claimed(node, id)
  return redis.call('SISMEMBER', P..':reaped:'..node, id) == 1 or redis.call('SISMEMBER', P..':gone:'..node, id) == 1
end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// putScript: ARGV prefix, id, node, record. A connection claimed from node while it was
// silent is never written back by it: its close webhook has been sent, and a record would be
// claimed, and closed, a second time.
var putScript = redis.NewScript(lib + `
local id, node, rec = ARGV[2], ARGV[3], ARGV[4]
if claimed(node, id) then return 0 end
local old = redis.call('HGET', P..':conns', id)
if old then unindex(id, old) end
index(id, rec)
return 1
`)

// deleteScript: ARGV prefix, id, node. Only the node that holds the record removes it.
var deleteScript = redis.NewScript(lib + `
local id, node = ARGV[2], ARGV[3]
local old = redis.call('HGET', P..':conns', id)
if not old then return 0 end
if cjson.decode(old).node ~= node then return 0 end
unindex(id, old)
return 1
`)

// replaceScript: ARGV prefix, node, then id, record pairs.
var replaceScript = redis.NewScript(lib + `
local node = ARGV[2]
for _, id in ipairs(redis.call('SMEMBERS', P..':node:'..node)) do
  local old = redis.call('HGET', P..':conns', id)
  if old then unindex(id, old) end
end
redis.call('DEL', P..':node:'..node)
for i = 3, #ARGV, 2 do
  if not claimed(node, ARGV[i]) then
    local old = redis.call('HGET', P..':conns', ARGV[i])
    if old then unindex(ARGV[i], old) end
    index(ARGV[i], ARGV[i+1])
  end
end
return 1
`)

// beatScript: ARGV prefix, node. Returns {known (0/1), reaped ids}.
var beatScript = redis.NewScript(lib + `
local node = ARGV[2]
local rkey = P..':reaped:'..node
local reaped = redis.call('SMEMBERS', rkey)
if #reaped > 0 then
  redis.call('SUNIONSTORE', P..':gone:'..node, P..':gone:'..node, rkey)
  redis.call('EXPIRE', P..':gone:'..node, 86400)
  redis.call('DEL', rkey)
end
local known = redis.call('ZSCORE', P..':nodes', node)
redis.call('ZADD', P..':nodes', now(), node)
if known then return {1, reaped} end
return {0, reaped}
`)

// silentScript: ARGV prefix, timeout in ms.
var silentScript = redis.NewScript(lib + `
return redis.call('ZRANGEBYSCORE', P..':nodes', '-inf', '(' .. (now() - tonumber(ARGV[2])))
`)

// claimScript: ARGV prefix, dead, claimer, timeout in ms (0: unconditionally). Returns the
// number of records claimed. Removing dead from P:nodes in the same script as the check is
// what makes the claim exclusive: a second claimer finds it gone.
var claimScript = redis.NewScript(lib + `
local dead, claimer, timeout = ARGV[2], ARGV[3], tonumber(ARGV[4])
local t = now()
if timeout > 0 then
  local seen = redis.call('ZSCORE', P..':nodes', dead)
  if not seen or t - tonumber(seen) <= timeout then return 0 end
end
redis.call('ZREM', P..':nodes', dead)
-- The claimer is registered from now on, so that if it dies before it settles, its orphans
-- are claimed with it.
redis.call('ZADD', P..':nodes', 'NX', t, claimer)
local okey = P..':orphans:'..claimer
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', P..':node:'..dead)) do
  local rec = redis.call('HGET', P..':conns', id)
  if rec then
    unindex(id, rec)
    redis.call('HSET', okey, id, rec)
    if dead ~= claimer then redis.call('SADD', P..':reaped:'..dead, id) end
    n = n + 1
  end
end
redis.call('DEL', P..':node:'..dead)
if dead ~= claimer then
  local dkey = P..':orphans:'..dead
  local kv = redis.call('HGETALL', dkey)
  for i = 1, #kv, 2 do
    redis.call('HSET', okey, kv[i], kv[i+1])
    n = n + 1
  end
  redis.call('DEL', dkey)
  -- Kept for the dead node's return, but not for ever if it never returns.
  redis.call('EXPIRE', P..':reaped:'..dead, 86400)
end
return n
`)

// leaveScript: ARGV prefix, node. A node with orphans stays registered for a survivor.
var leaveScript = redis.NewScript(lib + `
local node = ARGV[2]
for _, id in ipairs(redis.call('SMEMBERS', P..':node:'..node)) do
  local old = redis.call('HGET', P..':conns', id)
  if old then unindex(id, old) end
end
redis.call('DEL', P..':node:'..node)
if redis.call('HLEN', P..':orphans:'..node) == 0 then redis.call('ZREM', P..':nodes', node) end
return 1
`)

// presentScript: ARGV prefix, node, ttl in ms. Run's presence, refreshed with every ping.
var presentScript = redis.NewScript(lib + `
local t = now()
redis.call('ZREMRANGEBYSCORE', P..':running', '-inf', t)
redis.call('ZADD', P..':running', t + tonumber(ARGV[3]), ARGV[2])
return 1
`)

// runningScript: ARGV prefix. The nodes whose presence has not expired.
var runningScript = redis.NewScript(lib + `
return redis.call('ZRANGEBYSCORE', P..':running', '(' .. now(), '+inf')
`)
