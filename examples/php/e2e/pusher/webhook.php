<?php

declare(strict_types=1);

// A Pusher-format webhook endpoint as an app writes one with the kit (php -S, started by
// examples/php/e2e/pusherapi_test.go, TestPusherWebhooksToPHP): it verifies X-Pusher-Key and
// X-Pusher-Signature and appends each event, one JSON line, to WSBRIDGE_TEST_PUSHER_EVENTS; a
// request that does not verify is answered 401 and noted as {"refused": why}.

require __DIR__ . '/../../lib/autoload.php';

use WsBridge\PusherSignature;
use WsBridge\SignatureException;

$body = (string) file_get_contents('php://input');
$log = (string) getenv('WSBRIDGE_TEST_PUSHER_EVENTS');
try {
    $hook = PusherSignature::verifyWebhook((string) getenv('WSBRIDGE_TEST_PUSHER_KEY'), (string) getenv('WSBRIDGE_TEST_PUSHER_SECRET'),
        $_SERVER['HTTP_X_PUSHER_KEY'] ?? null, $_SERVER['HTTP_X_PUSHER_SIGNATURE'] ?? null, $body);
} catch (SignatureException $e) {
    file_put_contents($log, json_encode(['refused' => $e->getMessage()]) . "\n", FILE_APPEND | LOCK_EX);
    http_response_code(401);
    return;
}
$lines = '';
foreach ($hook['events'] as $event) {
    $lines .= json_encode($event + ['time_ms' => $hook['time_ms']], JSON_UNESCAPED_SLASHES) . "\n";
}
file_put_contents($log, $lines, FILE_APPEND | LOCK_EX);
http_response_code(200);
