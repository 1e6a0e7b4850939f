<?php

declare(strict_types=1);

/*
 * The webhook wsbridge calls for every WebSocket event of the chat demo: "open" (a browser wants
 * to connect), "message" (it sent a frame) and "close" (it is gone). Each answer tells wsbridge
 * what to do: who the connection is, which channels it joins, what to send and to whom.
 *
 * wsbridge also proxies ordinary HTTP to this PHP server, so this script is reachable from the
 * outside too: that is why the signature check matters.
 */

require __DIR__ . '/wsbridge.php';

const CHANNEL = 'lobby';
const MAX_TEXT_CHARS = 2000;

/** Ends the request with a status and a plain-text body. */
function fail(int $status, string $text): never
{
    http_response_code($status);
    header('Content-Type: text/plain; charset=utf-8');
    echo $text;
    exit;
}

/** A publication of one JSON-encoded chat event to everyone in the lobby. */
function to_lobby(array $payload): array
{
    return ['to' => ['channels' => [CHANNEL]], 'data' => wsbridge_json($payload)];
}

/** The display name stored in the connection's meta on open. */
function display_name(array $event): string
{
    $meta = $event['meta'] ?? null;
    if (is_array($meta) && is_string($meta['name'] ?? null)) {
        return $meta['name'];
    }
    $userId = $event['user_id'] ?? '';
    return is_string($userId) && $userId !== '' ? $userId : 'someone';
}

/** @return list<string> the users in the lobby, plus $name; just [$name] if the API is down */
function online_users(string $name): array
{
    try {
        $users = wsbridge_api('GET', '/v1/channels/' . rawurlencode(CHANNEL))['users'] ?? [];
    } catch (RuntimeException $e) {
        // An unknown (empty) channel may be a 404 too; either way the welcome still works.
        error_log('webhook: ' . $e->getMessage());
        $users = [];
    }
    $users = array_filter(is_array($users) ? $users : [], 'is_string');
    $users[] = $name;
    return array_values(array_unique($users));
}

function on_open(array $event): never
{
    // The browser connects to /ws?name=...; the raw query string comes in request.query.
    parse_str((string) ($event['request']['query'] ?? ''), $query);
    $name = is_string($query['name'] ?? null) ? trim($query['name']) : '';
    if (preg_match('/^[A-Za-z0-9 _.\-]{1,32}$/D', $name) !== 1) {
        // A non-2xx answer refuses the upgrade; wsbridge passes status and body to the client.
        fail(403, 'pick a name of 1-32 letters or digits');
    }

    // Ask for the list before this connection joins: it is not in the lobby yet.
    $online = online_users($name);

    wsbridge_reply([
        'user_id' => $name,
        'meta' => ['name' => $name],
        'join' => [CHANNEL],
        'send' => [wsbridge_json(['type' => 'welcome', 'you' => $name, 'online' => $online])],
        'publish' => [to_lobby(['type' => 'joined', 'name' => $name])],
    ]);
}

function on_message(array $event): never
{
    $text = $event['data'] ?? null;
    if (($event['binary'] ?? false) === true || !is_string($text)) {
        wsbridge_reply([]); // this chat has no use for binary frames
    }

    $text = trim($text);
    // Cap by characters, not bytes, so a multibyte character is never cut in half (this also
    // refuses invalid UTF-8, which json_encode could not encode anyway).
    if ($text === '' || preg_match('/^.{0,' . MAX_TEXT_CHARS . '}/su', $text, $m) !== 1) {
        wsbridge_reply([]);
    }
    $text = $m[0];

    if ($text === '/quit') {
        // The close webhook that follows announces the departure.
        wsbridge_reply(['close' => ['code' => 1000, 'reason' => 'bye']]);
    }

    // The sender is in the lobby too, so it gets its own message back: that is its echo.
    wsbridge_reply([
        'publish' => [to_lobby(['type' => 'chat', 'from' => display_name($event), 'text' => $text])],
    ]);
}

function on_close(array $event): never
{
    // The connection is gone: a close reply may carry only "publish".
    wsbridge_reply([
        'publish' => [to_lobby(['type' => 'left', 'name' => display_name($event)])],
    ]);
}

if (($_SERVER['REQUEST_METHOD'] ?? '') !== 'POST') {
    header('Allow: POST');
    fail(405, 'webhooks are POSTed by wsbridge');
}

$body = (string) file_get_contents('php://input');

// Without a secret (local experiments) every request is trusted; wsbridge signs only when it
// has one too. With a secret, an unsigned, forged or stale request is refused.
$secret = getenv('WSBRIDGE_WEBHOOK_SECRET');
if ($secret !== false && $secret !== ''
    && !wsbridge_verify($body, (string) ($_SERVER['HTTP_WSBRIDGE_SIGNATURE'] ?? ''), $secret, 300)) {
    fail(401, 'bad or missing WsBridge-Signature');
}

$event = json_decode($body, true);
if (!is_array($event)) {
    fail(400, 'the body must be a JSON object');
}

match ($event['type'] ?? $_SERVER['HTTP_WSBRIDGE_EVENT'] ?? null) {
    'open' => on_open($event),
    'message' => on_message($event),
    'close' => on_close($event),
    default => fail(400, 'unknown event type'),
};
