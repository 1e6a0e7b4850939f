<?php

declare(strict_types=1);

// The notify example only receives pushes: the open webhook says whose page this is (from the
// session), and nothing else needs an answer.
require __DIR__ . '/../bootstrap.php';

use WsBridge\OpenEvent;
use WsBridge\ProtocolException;
use WsBridge\Reply;
use WsBridge\SignatureException;
use WsBridge\Webhook;

try {
    $event = (new Webhook(setting('WSBRIDGE_WEBHOOK_SECRET')))->receive();
} catch (SignatureException | ProtocolException $e) {
    Webhook::refuse($e);
}
if (!$event instanceof OpenEvent) {
    Reply::accept()->emit($event); // 204: pages send nothing that needs handling
    exit;
}
$sid = $event->request->cookie(session_name()) ?? '';
if (preg_match('/^[A-Za-z0-9,-]{1,128}$/D', $sid) === 1) {
    session_id($sid);
    session_start(['read_and_close' => true]); // read without holding the session lock
}
$user = $_SESSION['user'] ?? null;
if (!is_string($user)) {
    Reply::reject(401, 'log in first')->emit($event);
    exit;
}
// The user's own channel, joined at open: a publication to one channel is numbered and kept when
// wsbridge keeps history (WSBRIDGE_HISTORY_SIZE), so a page that was offline gets what it missed.
Reply::accept()->user($user)->join(notify_channel($user))->emit($event); // with the event: its id is echoed
