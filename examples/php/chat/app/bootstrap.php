<?php

declare(strict_types=1);

/*
 * Shared by every script of the chat: the kit, the settings (all from the environment, as
 * wsbridge's are), the demo's users, and the room store. Kept outside public/ so it is never
 * served.
 */

require __DIR__ . '/../../lib/autoload.php';
require __DIR__ . '/Rooms.php';

use WsBridge\Client;

/** A setting from the environment (php-fpm: env[...] in the pool; php -S: variables_order=EGPCS). */
function setting(string $name, string $default = ''): string
{
    $v = getenv($name);
    return $v === false || $v === '' ? $default : $v;
}

/**
 * The demo's accounts: name => role. A real app checks a password hash from its database; the
 * demo's password is the same for all, so the login page can say it.
 */
const USERS = ['ann' => 'admin', 'bob' => 'member', 'cat' => 'member'];
const DEMO_PASSWORD = 'demo';

function api(): Client
{
    static $client;
    return $client ??= new Client(setting('WSBRIDGE_API', 'http://127.0.0.1:8081'), setting('WSBRIDGE_API_TOKEN') ?: null);
}

function rooms(): Rooms
{
    static $rooms;
    return $rooms ??= new Rooms(setting('CHAT_DATA_DIR', sys_get_temp_dir() . '/wsbridge-chat') . '/rooms.json');
}

/** The channel of a room: one place decides the naming. */
function room_channel(string $room): string
{
    return 'room:' . $room;
}

/** The JSON form of a server-to-browser message: {"type": ..., ...}. */
function msg(string $type, array $fields = []): string
{
    return json_encode(['type' => $type] + $fields, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
}

/** The logged-in user of this page request, or null. */
function current_user(): ?string
{
    // Pages only read the session: closing it at once keeps one user's requests from queueing
    // behind each other on PHP's session lock.
    session_start(['read_and_close' => true]);
    $user = $_SESSION['user'] ?? null;
    return is_string($user) && isset(USERS[$user]) ? $user : null;
}
