<?php
// The test app's webhook endpoint: a small chat that authenticates the socket with the PHP
// session cookie, relays messages to a room, and records close events in CLOSE_LOG.
declare(strict_types=1);
require __DIR__ . '/verify.php';

$body = file_get_contents('php://input');
$err = wsbridge_verify((string) getenv('WSBRIDGE_WEBHOOK_SECRET'), $_SERVER['HTTP_WSBRIDGE_SIGNATURE'] ?? '', $body, time());
if ($err !== null) {
    http_response_code(401);
    header('Content-Type: text/plain');
    echo 'bad signature: ', $err;
    exit;
}
$ev = json_decode($body, true, 512, JSON_THROW_ON_ERROR);
if ($ev['type'] !== ($_SERVER['HTTP_WSBRIDGE_EVENT'] ?? '') || $ev['connection_id'] !== ($_SERVER['HTTP_WSBRIDGE_CONNECTION'] ?? '')) {
    http_response_code(400);
    exit;
}

function reply(array $r): never
{
    header('Content-Type: application/json');
    echo json_encode($r, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES);
    exit;
}

switch ($ev['type']) {
    case 'open':
        // The session cookie came with the handshake; read the session without locking it
        // (read_and_close), so page requests of the same user are not serialized behind us.
        parse_str(strtr($ev['request']['headers']['Cookie'] ?? '', ['; ' => '&']), $cookies);
        $user = null;
        if (isset($cookies[session_name()])) {
            session_id($cookies[session_name()]);
            session_start(['read_and_close' => true]);
            $user = $_SESSION['user'] ?? null;
        }
        if ($user === null || $user === '') {
            http_response_code(403);
            header('Content-Type: text/plain');
            echo 'not logged in';
            exit;
        }
        reply([
            'user_id' => $user,
            'meta' => ['name' => ucfirst($user), 'n' => 0],
            'join' => ['room:1'],
            'send' => ['welcome ' . $user],
        ]);
    case 'message':
        $n = $ev['meta']['n'] + 1;
        if ($ev['binary']) {
            // Echo binary frames back untouched.
            reply(['send' => [['data_base64' => $ev['data_base64']]], 'meta' => ['name' => $ev['meta']['name'], 'n' => $n]]);
        }
        if ($ev['data'] === '/quit') {
            reply(['close' => ['code' => 4000, 'reason' => 'bye ' . $ev['user_id']]]);
        }
        reply([
            'meta' => ['name' => $ev['meta']['name'], 'n' => $n],
            'send' => ["ack {$ev['seq']} {$n}"],
            'publish' => [[
                'to' => ['channels' => ['room:1']],
                'except' => $ev['connection_id'],
                'data' => $ev['meta']['name'] . ': ' . $ev['data'],
            ]],
        ]);
    case 'close':
        file_put_contents((string) getenv('CLOSE_LOG'), $body . "\n", FILE_APPEND | LOCK_EX);
        http_response_code(204);
        exit;
}
http_response_code(400);
