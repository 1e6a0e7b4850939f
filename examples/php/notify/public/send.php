<?php

declare(strict_types=1);

// An ordinary PHP request that pushes: POST to=<user>&text=<text>. Answers JSON
// {"delivered": N} (N = the user's open pages), or 400/502 with what went wrong.
require __DIR__ . '/../bootstrap.php';

use WsBridge\ClientException;

header('Content-Type: application/json');
$to = (string) ($_POST['to'] ?? '');
$text = trim((string) ($_POST['text'] ?? ''));
if (($_SERVER['REQUEST_METHOD'] ?? '') !== 'POST' || !valid_user($to) || $text === '') {
    http_response_code(400);
    echo json_encode(['error' => 'POST to=<user>&text=<text>']);
    exit;
}
try {
    echo json_encode(['delivered' => notify($to, $text)]);
} catch (ClientException $e) {
    http_response_code(502);
    echo json_encode(['error' => $e->getMessage()]);
}
