<?php
// The fault suite's webhook: records every attempt it receives in EVENT_LOG, then answers as
// FAULT_FILE says for that event type: ok, slow, error (500), garbage (200 with a body that is
// not a reply) or huge (200 with a 2 MiB body). The file is re-read on every request, so a test
// switches faults without restarting PHP.
declare(strict_types=1);

$body = file_get_contents('php://input');
$ev = json_decode($body, true, 512, JSON_THROW_ON_ERROR);
file_put_contents((string) getenv('EVENT_LOG'), json_encode([
    'type' => $ev['type'],
    'connection_id' => $ev['connection_id'],
    'event_id' => $ev['event_id'],
    'attempt' => (int) ($_SERVER['HTTP_WSBRIDGE_ATTEMPT'] ?? 0),
    'seq' => $ev['seq'] ?? null,
    'data' => $ev['data'] ?? null,
    'code' => $ev['code'] ?? null,
    'reason' => $ev['reason'] ?? null,
    'initiator' => $ev['initiator'] ?? null,
]) . "\n", FILE_APPEND | LOCK_EX);

$faults = json_decode((string) @file_get_contents((string) getenv('FAULT_FILE')), true) ?: [];
switch ($faults[$ev['type']] ?? 'ok') {
    case 'slow':
        usleep(2_000_000);
        http_response_code(204);
        break;
    case 'error':
        http_response_code(500);
        echo 'PHP Fatal error: something broke';
        break;
    case 'garbage':
        header('Content-Type: text/html');
        echo '<html><body>Welcome to nginx!</body></html>';
        break;
    case 'huge':
        header('Content-Type: application/json');
        echo '{"send":["', str_repeat('x', 2 << 20), '"]}';
        break;
    default:
        if ($ev['type'] === 'open') {
            header('Content-Type: application/json');
            echo '{"join":["all"]}';
        } else {
            http_response_code(204);
        }
}
