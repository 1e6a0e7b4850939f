<?php

declare(strict_types=1);

// POST name + password: logs in (a new session id, against fixation) and goes to the chat.
// POST logout=1: logs out.
require __DIR__ . '/../app/bootstrap.php';

if (($_SERVER['REQUEST_METHOD'] ?? '') !== 'POST') {
    header('Location: /');
    http_response_code(303);
    exit;
}
session_start();
if (isset($_POST['logout'])) {
    $_SESSION = [];
    session_destroy();
    header('Location: /', true, 303);
    exit;
}
$name = is_string($_POST['name'] ?? null) ? $_POST['name'] : '';
$password = is_string($_POST['password'] ?? null) ? $_POST['password'] : '';
if (!isset(USERS[$name]) || !hash_equals(DEMO_PASSWORD, $password)) {
    session_write_close();
    header('Location: /?error=1', true, 303);
    exit;
}
session_regenerate_id(true);
$_SESSION['user'] = $name;
session_write_close();
header('Location: /', true, 303);
