package redis

import goredis "github.com/redis/go-redis/v9"

// Lua scripts. Each runs atomically in the slot of KEYS[1]; the keys it
// builds from the tenant prefix share that slot through the {t:<tenant>} hash
// tag. Times are unix milliseconds from the Go clock.

// luaEnqueue appends a message to its client's queue. A stream entry (field c
// = client) exists exactly when the client has messages, none in flight or
// delayed: it is added when the queue goes from empty to one.
const luaEnqueue = `
local function ensure_group(s)
  if redis.call('EXISTS', s) == 0 then
    redis.call('XGROUP', 'CREATE', s, 'w', '0', 'MKSTREAM')
  end
end
local function enqueue(ob, client, id, json, enq)
  if redis.call('HEXISTS', ob .. 'msgs', id) == 1 or redis.call('HEXISTS', ob .. 'dl', id) == 1 then
    return 0
  end
  redis.call('HSET', ob .. 'msgs', id, json)
  redis.call('ZADD', ob .. 'age', enq, id)
  if redis.call('RPUSH', ob .. 'q:' .. client, id) == 1 then
    ensure_group(ob .. 's')
    redis.call('XADD', ob .. 's', '*', 'c', client)
  end
  return 1
end
`

// scriptEnqueue: ARGV = n, then n times (ob prefix, client, id, json, enqMs).
var scriptEnqueue = goredis.NewScript(luaEnqueue + `
local n = tonumber(ARGV[1])
local added = 0
for i = 0, n - 1 do
  local b = 2 + i * 5
  added = added + enqueue(ARGV[b], ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4])
end
return added
`)

// scriptPut: KEYS[1] = record hash. ARGV = tp, base version, new version,
// record json, kind/id, old client ("" if new), old member, new client, new
// member, nOld, old ident fields..., nNew, new ident fields..., nMsgs, then
// nMsgs times (ob prefix, client, id, json, enqMs). Returns 0 when the latest
// version is no longer base (the caller retries).
var scriptPut = goredis.NewScript(luaEnqueue + `
local k = KEYS[1]
local tp = ARGV[1]
local cur = redis.call('HGET', k, 'latest') or '0'
if cur ~= ARGV[2] then return 0 end
redis.call('HSET', k, 'latest', ARGV[3], 'v:' .. ARGV[3], ARGV[4])
redis.call('SADD', tp .. 'recs', ARGV[5])
if ARGV[6] ~= '' then redis.call('ZREM', tp .. 'c:' .. ARGV[6], ARGV[7]) end
redis.call('ZADD', tp .. 'c:' .. ARGV[8], 0, ARGV[9])
local i = 10
local nOld = tonumber(ARGV[i]); i = i + 1
for j = 1, nOld do
  if redis.call('HGET', tp .. 'ident', ARGV[i]) == ARGV[5] then redis.call('HDEL', tp .. 'ident', ARGV[i]) end
  i = i + 1
end
local nNew = tonumber(ARGV[i]); i = i + 1
for j = 1, nNew do
  redis.call('HSET', tp .. 'ident', ARGV[i], ARGV[5]); i = i + 1
end
local nMsgs = tonumber(ARGV[i]); i = i + 1
for j = 1, nMsgs do
  enqueue(ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]); i = i + 5
end
return 1
`)

// scriptLatest: ARGV = record hash keys; returns the latest json of each
// (false when missing).
var scriptLatest = goredis.NewScript(`
local out = {}
for i, k in ipairs(ARGV) do
  local v = redis.call('HGET', k, 'latest')
  if v then out[i] = redis.call('HGET', k, 'v:' .. v) else out[i] = false end
end
return out
`)

// scriptLease: KEYS[1] = stream. ARGV = ob prefix, consumer, min idle ms,
// count, nowMs, lease deadline ms (for Status). Promotes due delayed clients, reclaims entries idle longer
// than the lease (XAUTOCLAIM), reads new entries, and leases each entry's
// client head: bumps the message's fencing token. Returns a list of {entry
// id, token, message json, attempts...}.
var scriptLease = goredis.NewScript(`
local s, ob, consumer = KEYS[1], ARGV[1], ARGV[2]
local minIdle, count, now = ARGV[3], tonumber(ARGV[4]), ARGV[5]
if redis.call('EXISTS', s) == 0 then return {} end
local due = redis.call('ZRANGEBYSCORE', ob .. 'delay', '-inf', now, 'LIMIT', 0, 1000)
for _, c in ipairs(due) do
  redis.call('ZREM', ob .. 'delay', c)
  redis.call('XADD', s, '*', 'c', c)
end
local entries = {}
local cursor = redis.call('GET', ob .. 'claimcur') or '0-0'
local claimed = redis.call('XAUTOCLAIM', s, 'w', consumer, minIdle, cursor, 'COUNT', count)
redis.call('SET', ob .. 'claimcur', claimed[1])
for _, e in ipairs(claimed[2]) do
  if e then table.insert(entries, e) end
end
if #entries < count then
  local r = redis.call('XREADGROUP', 'GROUP', 'w', consumer, 'COUNT', count - #entries, 'STREAMS', s, '>')
  if r then
    for _, e in ipairs(r[1][2]) do table.insert(entries, e) end
  end
end
local out = {}
for _, e in ipairs(entries) do
  local eid, f = e[1], e[2]
  local client = nil
  for j = 1, #f, 2 do if f[j] == 'c' then client = f[j+1] end end
  local id = client and redis.call('LINDEX', ob .. 'q:' .. client, 0)
  if not id then
    redis.call('XACK', s, 'w', eid)
    redis.call('XDEL', s, eid)
  else
    local tok = redis.call('HINCRBY', ob .. 'tok', id, 1)
    redis.call('HSET', ob .. 'lease', id, ARGV[6])
    local item = {eid, tostring(tok), redis.call('HGET', ob .. 'msgs', id)}
    for _, a in ipairs(redis.call('LRANGE', ob .. 'att:' .. id, 0, -1)) do table.insert(item, a) end
    table.insert(out, item)
  end
end
return out
`)

// luaCheck verifies a lease: ARGV = ob prefix, client, id, token, entry id.
const luaCheck = `
local s, ob, client, id, tok, eid = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local q = ob .. 'q:' .. client
if redis.call('HGET', ob .. 'tok', id) ~= tok or redis.call('LINDEX', q, 0) ~= id then
  return 0
end
local function release_head()
  redis.call('LPOP', q)
  redis.call('HDEL', ob .. 'msgs', id)
  redis.call('HDEL', ob .. 'tok', id)
  redis.call('HDEL', ob .. 'lease', id)
  redis.call('ZREM', ob .. 'age', id)
  redis.call('XACK', s, 'w', eid)
  redis.call('XDEL', s, eid)
  if redis.call('LLEN', q) > 0 then redis.call('XADD', s, '*', 'c', client) end
end
`

// scriptAck: KEYS[1] = stream; ARGV as luaCheck. Returns 1, or 0 when the
// lease is no longer held.
var scriptAck = goredis.NewScript(luaCheck + `
release_head()
redis.call('DEL', ob .. 'att:' .. id)
return 1
`)

// scriptRetry: ARGV as luaCheck, then at ms, attempt json.
var scriptRetry = goredis.NewScript(luaCheck + `
redis.call('RPUSH', ob .. 'att:' .. id, ARGV[7])
redis.call('HINCRBY', ob .. 'tok', id, 1)
redis.call('HDEL', ob .. 'lease', id)
redis.call('XACK', s, 'w', eid)
redis.call('XDEL', s, eid)
redis.call('ZADD', ob .. 'delay', ARGV[6], client)
return 1
`)

// scriptRelease: ARGV as luaCheck. Fences the lease (bumps the token) and
// makes the client due again at once without recording an attempt.
var scriptReleaseLease = goredis.NewScript(luaCheck + `
redis.call('HINCRBY', ob .. 'tok', id, 1)
redis.call('HDEL', ob .. 'lease', id)
redis.call('XACK', s, 'w', eid)
redis.call('XDEL', s, eid)
redis.call('XADD', s, '*', 'c', client)
return 1
`)

// scriptStatus: KEYS[1] = stream; ARGV = ob prefix, id. Returns {'m',
// message json, lease deadline ms or empty, retry ms or empty, is head 1/0,
// attempts}, {'d', message json, meta json, attempts} or {'n'}.
var scriptStatus = goredis.NewScript(`
local ob, id = ARGV[1], ARGV[2]
local atts = redis.call('LRANGE', ob .. 'att:' .. id, 0, -1)
local m = redis.call('HGET', ob .. 'msgs', id)
if m then
  local client = cjson.decode(m)['clientId']
  local head = redis.call('LINDEX', ob .. 'q:' .. client, 0)
  if head ~= id then return {'m', m, '', '', '0', atts} end
  local lease = redis.call('HGET', ob .. 'lease', id) or ''
  local delay = redis.call('ZSCORE', ob .. 'delay', client) or ''
  return {'m', m, lease, delay, '1', atts}
end
local d = redis.call('HGET', ob .. 'dl', id)
if d then return {'d', d, redis.call('HGET', ob .. 'dlmeta', id) or '', atts} end
return {'n'}
`)

// scriptDeadLetter: ARGV as luaCheck, then dead ms, attempt json, meta json.
var scriptDeadLetter = goredis.NewScript(luaCheck + `
redis.call('RPUSH', ob .. 'att:' .. id, ARGV[7])
redis.call('HSET', ob .. 'dl', id, redis.call('HGET', ob .. 'msgs', id))
redis.call('HSET', ob .. 'dlmeta', id, ARGV[8])
redis.call('ZADD', ob .. 'dlz', ARGV[6], id)
release_head()
return 1
`)

// scriptReplay: KEYS[1] = stream; ARGV = ob prefix, client, id, enqMs, the
// dead letter's json as read, its attempt count as read, the json to queue
// (with the replay counters). Returns 0 when there is no such dead letter,
// -1 when it changed since it was read (the caller reads it again).
var scriptReplay = goredis.NewScript(luaEnqueue + `
local ob, client, id = ARGV[1], ARGV[2], ARGV[3]
local json = redis.call('HGET', ob .. 'dl', id)
if not json then return 0 end
if json ~= ARGV[5] or redis.call('LLEN', ob .. 'att:' .. id) ~= tonumber(ARGV[6]) then return -1 end
redis.call('HDEL', ob .. 'dl', id)
redis.call('HDEL', ob .. 'dlmeta', id)
redis.call('ZREM', ob .. 'dlz', id)
enqueue(ob, client, id, ARGV[7], ARGV[4])
return 1
`)

// scriptDiscard: KEYS[1] = dead-letter hash; ARGV = ob prefix, id. Removes
// the dead letter and its attempts; returns 0 when there is none.
var scriptDiscard = goredis.NewScript(`
local ob, id = ARGV[1], ARGV[2]
if redis.call('HDEL', ob .. 'dl', id) == 0 then return 0 end
redis.call('HDEL', ob .. 'dlmeta', id)
redis.call('ZREM', ob .. 'dlz', id)
redis.call('DEL', ob .. 'att:' .. id)
return 1
`)

// scriptLedgerPut: KEYS[1] = entries hash; ARGV = states hash, state set
// prefix, field, state, json.
var scriptLedgerPut = goredis.NewScript(`
local old = redis.call('HGET', ARGV[1], ARGV[3])
if old then redis.call('SREM', ARGV[2] .. old, ARGV[3]) end
redis.call('SADD', ARGV[2] .. ARGV[4], ARGV[3])
redis.call('HSET', ARGV[1], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[5])
return 1
`)

// scriptLedgerPutAll: KEYS[1] = entries hash; ARGV = states hash, state set
// prefix, keep-unknown "1" or "0", then (field, state, json) per entry. With
// keep-unknown, a failed or unknown entry keeps the stored target id and
// version when it has none, and a failed one over an unknown one stays
// unknown (kap.MergeLedgerEntry).
var scriptLedgerPutAll = goredis.NewScript(`
local keep = ARGV[3] == '1'
for i = 4, #ARGV, 3 do
  local f, st, js = ARGV[i], ARGV[i+1], ARGV[i+2]
  local old = redis.call('HGET', ARGV[1], f)
  if keep and old and (st == 'failed' or st == 'unknown') then
    local prevjs = redis.call('HGET', KEYS[1], f)
    if prevjs then
      local prev, e = cjson.decode(prevjs), cjson.decode(js)
      local changed = false
      if (e['targetId'] == nil or e['targetId'] == '') and prev['targetId'] then
        e['targetId'], e['versionId'] = prev['targetId'], prev['versionId']
        changed = true
      end
      if old == 'unknown' and st ~= 'unknown' then
        e['state'], st = 'unknown', 'unknown'
        changed = true
      end
      if changed then js = cjson.encode(e) end
    end
  end
  if old then redis.call('SREM', ARGV[2] .. old, f) end
  redis.call('SADD', ARGV[2] .. st, f)
  redis.call('HSET', ARGV[1], f, st)
  redis.call('HSET', KEYS[1], f, js)
end
return 1
`)

// scriptReserve: KEYS[1] = idempotency key; ARGV = fingerprint, now ms,
// reservation ttl ms.
var scriptReserve = goredis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'state', 'fp', 'until', 'resp')
if h[1] and tonumber(h[3]) > tonumber(ARGV[2]) then
  if h[2] ~= ARGV[1] then return {'fingerprint'} end
  if h[1] == 'p' then return {'inflight'} end
  return {'done', h[4]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'p', 'fp', ARGV[1], 'until', string.format('%d', tonumber(ARGV[2]) + tonumber(ARGV[3])))
redis.call('PEXPIRE', KEYS[1], 90000000)
return {'reserved'}
`)

// scriptComplete: KEYS[1] = idempotency key; ARGV = response json, until ms.
var scriptComplete = goredis.NewScript(`
if redis.call('HGET', KEYS[1], 'state') ~= 'p' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'd', 'resp', ARGV[1], 'until', ARGV[2])
redis.call('PEXPIRE', KEYS[1], 90000000)
return 1
`)

// scriptRelease: KEYS[1] = idempotency key.
var scriptRelease = goredis.NewScript(`
if redis.call('HGET', KEYS[1], 'state') == 'p' then redis.call('DEL', KEYS[1]) end
return 1
`)

// scriptAllow: a token bucket. KEYS[1] = bucket; ARGV = rate per second,
// burst, now ms. Returns {allowed, wait ms}.
var scriptAllow = goredis.NewScript(`
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(h[1]) or burst
local ts = tonumber(h[2]) or now
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) / 1000 * rate)
  ts = now
end
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%d', ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
return {allowed, wait}
`)
