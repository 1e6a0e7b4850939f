package redisbroker

// Channel history for the whole cluster (bridge.History, bridge.HistoryPublisher;
// docs/brokers.md "History with Redis").
//
// Each channel that keeps history has two keys, hash-tagged alike so that a Redis Cluster
// would put them in one slot (the channel is the tag; both keys begin with the same
// "P:hist:{channel}", so whatever braces the prefix or the channel hold, the tag is the same):
//
//	P:hist:{<channel>}       stream  the channel's last HISTORY_SIZE publications; entry ID
//	                                 <offset>-0, fields t (ms, Redis's clock), d (the data),
//	                                 b (present: binary)
//	P:hist:{<channel>}:meta  hash    epoch, offset (the newest), run (the run_id of the Redis
//	                                 process that wrote it), last (t of the newest entry)
//
// One script reads the record, changes the epoch if the record cannot be trusted, appends,
// trims and, for a publication, PUBLISHes its envelope on the bus: the offset, the entry and
// the bus message are one atomic step, so every node receives a channel's publications in
// offset order and none sees one without its entry or the other way round.
//
// The entry IDs are the offsets, so a read after a position is one XRANGE from there. The TTL
// is applied by the scripts, on Redis's clock: entries older than it are trimmed (XTRIM MINID)
// by every Append and Read before anything is read, and both keys expire (PEXPIRE) when the
// channel has not been used for the longer of the TTL and an hour, as the memory store forgets
// a quiet channel's record.

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsbridge/wsbridge/bridge"
)

var _ bridge.HistoryPublisher = (*Broker)(nil)

// recordKeep is the least time a channel's record outlives its last use (bridge's memory
// store keeps a record as long): a client of a quiet channel resumes without being told to
// reload.
const recordKeep = time.Hour

// maxOffset bounds the offsets a script is given: Lua's numbers are doubles, exact to 2^53.
// A position beyond it is ahead of any channel, and is answered as such.
const maxOffset = 1 << 53

// histLib is the part of the history scripts that finds a channel's record. KEYS[1] is the
// stream, KEYS[2] the meta hash; ARGV[1] a fresh epoch, used only if a new one is needed,
// ARGV[2] the TTL and ARGV[3] how long the record is kept, both in ms.
//
// The epoch changes, and what was kept is dropped, when offsets could repeat or entries were
// lost without a trace:
//   - no record: the first use, a record expired, a Redis that lost its data (FLUSHALL, a
//     restart without persistence);
//   - the record was written by another Redis process (its run_id): a restart that reloaded
//     an older snapshot, or a failover to a replica that missed the last writes, would
//     otherwise hand out offsets clients have already seen, for other publications. A
//     restart that lost nothing also changes it: the script cannot tell, and a client told
//     once to reload is better than one that silently misses a publication;
//   - the record says publications were made but their stream is gone (deleted, evicted by
//     maxmemory): the two keys expire together, so that is never the TTL's doing.
const histLib = `
local stream, meta = KEYS[1], KEYS[2]
local ttl, keep = tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local m = redis.call('HMGET', meta, 'epoch', 'offset', 'run', 'last')
local epoch, off, last = m[1], tonumber(m[2]) or 0, tonumber(m[4]) or 0
if not epoch or m[3] ~= run or (off > 0 and redis.call('EXISTS', stream) == 0) then
  epoch, off, last = ARGV[1], 0, 0
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0, 'run', run, 'last', 0)
end
-- Entries are stamped no earlier than the newest, so that the expired ones are always the
-- oldest, even if Redis's clock steps back.
now = math.max(now, last)
-- Drop the entries older than the TTL: the oldest first, each at most once.
while true do
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #head == 0 or tonumber(head[1][2][2]) >= now - ttl then break end
  local o = tonumber(string.match(head[1][1], '^(%d+)'))
  redis.call('XTRIM', stream, 'MINID', string.format('%d-0', o + 1))
end
redis.call('PEXPIRE', meta, keep)
redis.call('PEXPIRE', stream, keep)
`

// appendScript: histLib's ARGV, then ARGV[4] HISTORY_SIZE, ARGV[5] "1" for binary, ARGV[6] the
// data, ARGV[7] the bus channel, ARGV[8] the bus message's head ("e <origin> ") and ARGV[9]
// the envelope's JSON without its position, or "" to publish nothing. The position is spliced
// into the envelope as its last member: the envelope is a JSON object, and encoding/json
// writes no "position" for a nil one. Returns {epoch, offset}.
var appendScript = redis.NewScript(histLib + `
off = off + 1
local id = string.format('%d-0', off)
if ARGV[5] == '1' then
  redis.call('XADD', stream, 'MAXLEN', ARGV[4], id, 't', now, 'd', ARGV[6], 'b', '1')
else
  redis.call('XADD', stream, 'MAXLEN', ARGV[4], id, 't', now, 'd', ARGV[6])
end
redis.call('PEXPIRE', stream, keep)
redis.call('HSET', meta, 'offset', off, 'last', now)
if ARGV[9] ~= '' then
  local env = ARGV[9]
  redis.call('PUBLISH', ARGV[7], ARGV[8] .. string.sub(env, 1, -2) ..
    ',"position":{"epoch":"' .. epoch .. '","offset":' .. string.format('%d', off) .. '}}')
end
return {epoch, off}
`)

// readScript: histLib's ARGV, then ARGV[4] since's epoch ("" for none), ARGV[5] since's
// offset, ARGV[6] the limit. Returns {epoch, offset, entries}: the entries after since, oldest
// first, none when since is of another epoch.
var readScript = redis.NewScript(histLib + `
local limit = tonumber(ARGV[6])
if limit <= 0 or (ARGV[4] ~= '' and ARGV[4] ~= epoch) then return {epoch, off, {}} end
local from = string.format('%d-0', tonumber(ARGV[5]) + 1)
return {epoch, off, redis.call('XRANGE', stream, from, '+', 'COUNT', limit)}
`)

// historyKeys returns the stream and meta keys of channel.
func (b *Broker) historyKeys(channel string) []string {
	k := b.prefix + ":hist:{" + channel + "}"
	return []string{k, k + ":meta"}
}

// historyArgs are histLib's arguments.
func (b *Broker) historyArgs() ([]any, error) {
	if b.opts.HistorySize <= 0 {
		return nil, errors.New("redis broker: history is off in the broker (Options.HistorySize is 0, WSBRIDGE_HISTORY_SIZE not passed)")
	}
	ttl := b.opts.HistoryTTL
	return []any{newEpoch(), ttl.Milliseconds(), max(ttl, recordKeep).Milliseconds()}, nil
}

// newEpoch names a record's life: random, so that a record made again never repeats an epoch
// a client may hold.
func newEpoch() string { return strings.ToLower(rand.Text()[:10]) }

// Append keeps f as channel's next publication (bridge.History).
func (b *Broker) Append(ctx context.Context, channel string, f bridge.Frame) (bridge.Position, error) {
	return b.appendEntry(ctx, channel, f, nil)
}

// AppendPublish keeps f and publishes e with its position on the bus, in one script
// (bridge.HistoryPublisher).
func (b *Broker) AppendPublish(ctx context.Context, channel string, f bridge.Frame, e bridge.Envelope) (bridge.Position, error) {
	if e.Position != nil {
		return bridge.Position{}, errors.New("redis broker: AppendPublish: the envelope already has a position")
	}
	return b.appendEntry(ctx, channel, f, &e)
}

func (b *Broker) appendEntry(ctx context.Context, channel string, f bridge.Frame, e *bridge.Envelope) (bridge.Position, error) {
	args, err := b.historyArgs()
	if err != nil {
		return bridge.Position{}, err
	}
	binary := "0"
	if f.Binary {
		binary = "1"
	}
	var head string
	var env []byte
	if e != nil {
		if env, err = encodeEnvelope(*e); err != nil {
			return bridge.Position{}, err
		}
		head = string(kindEnvelope) + " " + e.Origin + " "
	}
	args = append(args, b.opts.HistorySize, binary, f.Data, b.bus, head, env)
	res, err := appendScript.Run(ctx, b.rdb, b.historyKeys(channel), args...).Slice()
	if err != nil {
		return bridge.Position{}, fmt.Errorf("redis broker: append to the history of %q: %w", channel, err)
	}
	if len(res) != 2 {
		return bridge.Position{}, fmt.Errorf("redis broker: append to the history of %q: unexpected reply %v", channel, res)
	}
	return position(res[0], res[1])
}

// Read returns channel's kept publications after since, oldest first, at most limit
// (bridge.History).
func (b *Broker) Read(ctx context.Context, channel string, since bridge.Position, limit int) ([]bridge.HistoryEntry, bridge.Position, error) {
	args, err := b.historyArgs()
	if err != nil {
		return nil, bridge.Position{}, err
	}
	args = append(args, since.Epoch, min(since.Offset, maxOffset), max(limit, 0))
	res, err := readScript.Run(ctx, b.rdb, b.historyKeys(channel), args...).Slice()
	if err != nil {
		return nil, bridge.Position{}, fmt.Errorf("redis broker: read the history of %q: %w", channel, err)
	}
	if len(res) != 3 {
		return nil, bridge.Position{}, fmt.Errorf("redis broker: read the history of %q: unexpected reply %v", channel, res)
	}
	top, err := position(res[0], res[1])
	if err != nil {
		return nil, bridge.Position{}, err
	}
	raw, _ := res[2].([]any)
	out := make([]bridge.HistoryEntry, 0, len(raw))
	for _, r := range raw {
		e, err := decodeEntry(top.Epoch, r)
		if err != nil {
			return nil, bridge.Position{}, fmt.Errorf("redis broker: read the history of %q: %w", channel, err)
		}
		out = append(out, e)
	}
	return out, top, nil
}

func position(epoch, offset any) (bridge.Position, error) {
	ep, ok1 := epoch.(string)
	off, ok2 := offset.(int64)
	if !ok1 || !ok2 || ep == "" || off < 0 {
		return bridge.Position{}, fmt.Errorf("redis broker: history: unexpected position %v:%v", epoch, offset)
	}
	return bridge.Position{Epoch: ep, Offset: uint64(off)}, nil
}

// decodeEntry reads one XRANGE entry: {"<offset>-0", {"t", ms, "d", data[, "b", "1"]}}.
func decodeEntry(epoch string, r any) (bridge.HistoryEntry, error) {
	pair, _ := r.([]any)
	if len(pair) != 2 {
		return bridge.HistoryEntry{}, fmt.Errorf("malformed entry %v", r)
	}
	id, _ := pair[0].(string)
	off, err := strconv.ParseUint(strings.TrimSuffix(id, "-0"), 10, 64)
	if err != nil {
		return bridge.HistoryEntry{}, fmt.Errorf("malformed entry id %q", id)
	}
	fields, _ := pair[1].([]any)
	e := bridge.HistoryEntry{Position: bridge.Position{Epoch: epoch, Offset: off}}
	var haveT, haveD bool
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		v, _ := fields[i+1].(string)
		switch k {
		case "t":
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return bridge.HistoryEntry{}, fmt.Errorf("entry %s: malformed time %q", id, v)
			}
			e.Time, haveT = time.UnixMilli(ms), true
		case "d":
			e.Frame.Data, haveD = []byte(v), true
		case "b":
			e.Frame.Binary = v == "1"
		}
	}
	if !haveT || !haveD {
		return bridge.HistoryEntry{}, fmt.Errorf("entry %s: missing fields", id)
	}
	return e, nil
}

// encodeEnvelope is the envelope's JSON as Publish sends it.
func encodeEnvelope(e bridge.Envelope) ([]byte, error) {
	js, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("redis broker: encode envelope: %w", err)
	}
	return js, nil
}
