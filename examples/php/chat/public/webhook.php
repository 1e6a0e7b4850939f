<?php

declare(strict_types=1);

/*
 * WSBRIDGE_WEBHOOK_URL points here. Every WebSocket event of the chat arrives as a signed POST;
 * the answer (a WsBridge\Reply) tells wsbridge what to do. Browser -> server frames are typed
 * JSON ({"type": "say" | "pm" | "create" | "join" | "leave" | "kick", ...}) or binary files.
 */

require __DIR__ . '/../app/bootstrap.php';

use WsBridge\CloseEvent;
use WsBridge\MessageEvent;
use WsBridge\OpenEvent;
use WsBridge\ProtocolException;
use WsBridge\Publication;
use WsBridge\Reply;
use WsBridge\SignatureException;
use WsBridge\Webhook;

const MAX_TEXT_CHARS = 2000;

try {
    $event = (new Webhook(setting('WSBRIDGE_WEBHOOK_SECRET')))->receive();
} catch (SignatureException | ProtocolException $e) {
    Webhook::refuse($e); // 401 for a forged or stale request: this URL is public via the proxy
}

$reply = match (true) {
    $event instanceof OpenEvent => on_open($event),
    $event instanceof MessageEvent => $event->binary ? on_file($event) : on_message($event),
    $event instanceof CloseEvent => on_close($event),
};
$reply->emit($event); // echoes WsBridge-Event-Id: wsbridge refuses an answer to another event

/** The handshake: the PHP session cookie says who this is. */
function on_open(OpenEvent $event): Reply
{
    $sid = $event->request->cookie(session_name());
    if ($sid === null || preg_match('/^[A-Za-z0-9,-]{1,128}$/D', $sid) !== 1) {
        return Reply::reject(401, 'log in first');
    }
    // read_and_close: read the session and release its lock at once. A webhook that held it
    // would make the user's page requests (and other webhooks) wait for each other.
    session_id($sid);
    session_start(['read_and_close' => true]);
    $user = $_SESSION['user'] ?? null;
    if (!is_string($user) || !isset(USERS[$user])) {
        return Reply::reject(401, 'log in first');
    }

    $rooms = rooms()->of($user);
    // Presence from the bridge: asked before this connection is registered, so 0 means this is
    // the user's first tab and the others should hear that they came online.
    $firstTab = api()->connections(user: $user)['count'] === 0;
    $online = api()->channel(room_channel(Rooms::LOBBY))['users'];
    $reply = Reply::accept()
        ->user($user)
        ->meta(['role' => USERS[$user]]) // comes back on every webhook: no lookup to check roles
        ->join(...array_map('room_channel', $rooms))
        ->send(msg('welcome', [
            'you' => $user,
            'admin' => USERS[$user] === 'admin',
            'rooms' => room_list($user),
            'online' => array_values(array_unique([...$online, $user])),
        ]));
    if ($firstTab) {
        $reply->publish(Publication::text(msg('presence', ['user' => $user, 'online' => true]))->toChannels(room_channel(Rooms::LOBBY)));
    }
    return $reply;
}

/** A typed JSON message from the browser. */
function on_message(MessageEvent $event): Reply
{
    try {
        $m = $event->json();
    } catch (ProtocolException) {
        return error_reply('messages are JSON objects');
    }
    $user = $event->userId;
    $str = static fn (string $k) => is_string($m[$k] ?? null) ? trim($m[$k]) : '';

    switch ($m['type'] ?? null) {
        case 'say':
            $room = $str('room');
            $text = clip($str('text'));
            if (!rooms()->isMember($room, $user)) {
                // The check is PHP's, on the app's data: the browser's idea of its rooms is not trusted.
                return error_reply("you are not a member of #$room");
            }
            if ($text === '') {
                return Reply::accept();
            }
            return Reply::accept()->publish(
                Publication::text(msg('say', ['room' => $room, 'from' => $user, 'text' => $text]))->toChannels(room_channel($room)),
            );

        case 'pm':
            $to = $str('to');
            $text = clip($str('text'));
            if (!isset(USERS[$to])) {
                return error_reply("no such user: $to");
            }
            if ($text === '') {
                return Reply::accept();
            }
            // To every tab of the target and of the sender (their own copy), nobody else.
            return Reply::accept()->publish(
                Publication::text(msg('pm', ['from' => $user, 'to' => $to, 'text' => $text]))->toUsers($to, $user),
            );

        case 'create':
            $room = $str('room');
            if (!Rooms::validName($room)) {
                return error_reply('room names are 1-32 of a-z, 0-9 and -');
            }
            if (!rooms()->create($room, $user)) {
                return error_reply("#$room exists already");
            }
            api()->join(room_channel($room), users: [$user]); // all of the creator's tabs
            return Reply::accept()->publish(
                Publication::text(msg('room', ['room' => $room, 'by' => $user]))->toAll(),
                Publication::text(msg('joined', ['room' => $room]))->toUsers($user),
            );

        case 'join':
        case 'leave':
            $room = $str('room');
            $join = $m['type'] === 'join';
            if (!rooms()->exists($room) || $room === Rooms::LOBBY) {
                return error_reply("cannot {$m['type']} #$room");
            }
            if (!rooms()->setMember($room, $user, $join)) {
                return Reply::accept(); // already so
            }
            // Every tab of the user follows, not just this one.
            $join ? api()->join(room_channel($room), users: [$user]) : api()->leave(room_channel($room), users: [$user]);
            return Reply::accept()->publish(
                Publication::text(msg($join ? 'joined' : 'left', ['room' => $room]))->toUsers($user),
                Publication::text(msg('presence', ['room' => $room, 'user' => $user, 'member' => $join]))->toChannels(room_channel($room)),
            );

        case 'kick':
            $target = $str('user');
            if (($event->meta['role'] ?? '') !== 'admin') {
                return error_reply('only an admin can kick');
            }
            if (!isset(USERS[$target]) || $target === $user) {
                return error_reply("cannot kick $target");
            }
            // 4001 is in 4000-4099, "refused, do not reconnect": the page stops retrying.
            $closed = api()->closeUser($target, 4001, "kicked by $user");
            return Reply::accept()->send(msg('info', ['text' => "kicked $target ($closed connections)"]));
    }
    return error_reply('unknown message type');
}

/**
 * A file: one binary frame of [4-byte big-endian header length][JSON header {room, name, type}]
 * [the bytes]. Relayed to the room with the sender added to the header.
 */
function on_file(MessageEvent $event): Reply
{
    $data = $event->data;
    $len = strlen($data) >= 4 ? unpack('N', $data)[1] : 0;
    $header = $len > 0 && $len <= 1024 ? json_decode(substr($data, 4, $len), true) : null;
    if (!is_array($header) || !is_string($header['room'] ?? null) || !is_string($header['name'] ?? null)) {
        return error_reply('bad file frame');
    }
    $room = $header['room'];
    if (!rooms()->isMember($room, $event->userId)) {
        return error_reply("you are not a member of #$room");
    }
    $out = json_encode([
        'room' => $room,
        'name' => substr(basename($header['name']), 0, 100),
        'type' => is_string($header['type'] ?? null) ? $header['type'] : 'application/octet-stream',
        'from' => $event->userId,
    ], JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    $bytes = substr($data, 4 + $len);
    return Reply::accept()->publish(
        Publication::binary(pack('N', strlen($out)) . $out . $bytes)->toChannels(room_channel($room)),
    );
}

/** A tab closed: if it was the user's last, the lobby hears they went offline. */
function on_close(CloseEvent $event): Reply
{
    if ($event->userId === '' || api()->connections(user: $event->userId)['count'] > 0) {
        return Reply::accept();
    }
    return Reply::accept()->publish(
        Publication::text(msg('presence', ['user' => $event->userId, 'online' => false]))->toChannels(room_channel(Rooms::LOBBY)),
    );
}

function error_reply(string $text): Reply
{
    return Reply::accept()->send(msg('error', ['text' => $text]));
}

/** Cuts text at MAX_TEXT_CHARS characters (never inside a UTF-8 sequence). */
function clip(string $text): string
{
    // preg with /u instead of mb_substr: mbstring is a separate Debian package, pcre is core.
    return preg_match('/^.{0,' . MAX_TEXT_CHARS . '}/su', $text, $m) === 1 ? $m[0] : '';
}

/** @return list<array{name: string, member: bool}> */
function room_list(string $user): array
{
    $out = [];
    foreach (rooms()->all() as $room => $members) {
        $out[] = ['name' => $room, 'member' => $room === Rooms::LOBBY || in_array($user, $members, true)];
    }
    return $out;
}
