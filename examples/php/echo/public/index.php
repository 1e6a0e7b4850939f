<?php

declare(strict_types=1);

// A Laravel Echo page on wsbridge's Pusher mode, and the two endpoints such an app needs: its
// channel authorisation (/broadcasting/auth, signed as Laravel's pusher broadcaster signs) and a
// demo login. Run with `php -S 127.0.0.1:8000 public/index.php` behind wsbridge (README.md);
// the browser reaches every path through wsbridge's reverse proxy, so the session cookie set
// here is sent on /broadcasting/auth and on the WebSocket handshake alike.

require __DIR__ . '/../../lib/autoload.php';

use WsBridge\PusherChannelAuth;

$key = getenv('PUSHER_APP_KEY') ?: 'app-key';
$secret = getenv('PUSHER_APP_SECRET') ?: 'app-secret';
$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);

// The demo's "session": who logged in. A real app uses its session and its users.
$user = preg_match('/\A[a-z]{1,32}\z/', $_COOKIE['demo_user'] ?? '') === 1 ? $_COOKIE['demo_user'] : null;

switch ($path) {
    case '/login':
        $name = (string) ($_GET['user'] ?? '');
        if (preg_match('/\A[a-z]{1,32}\z/', $name) !== 1) {
            http_response_code(400);
            exit('user: 1-32 lowercase letters');
        }
        setcookie('demo_user', $name, ['path' => '/', 'httponly' => true, 'samesite' => 'Lax']);
        header('Location: /');
        http_response_code(303);
        exit;

    case '/broadcasting/auth':
        // As Laravel's Broadcast::routes(): POST socket_id and channel_name, 403 unless the
        // channel's rule lets this user in.
        if ($_SERVER['REQUEST_METHOD'] !== 'POST' || $user === null) {
            http_response_code(403);
            exit;
        }
        $socketId = (string) ($_POST['socket_id'] ?? '');
        $channel = (string) ($_POST['channel_name'] ?? '');
        $auth = new PusherChannelAuth($key, $secret);
        header('Content-Type: application/json');
        try {
            if ($channel === 'private-user.' . $user || $channel === 'private-chat') {
                echo json_encode($auth->authorizePrivate($socketId, $channel));
            } elseif ($channel === 'presence-room') {
                echo json_encode($auth->authorizePresence($socketId, $channel, $user, ['name' => ucfirst($user)]));
            } else {
                http_response_code(403);
            }
        } catch (InvalidArgumentException $e) {
            http_response_code(400);
            echo json_encode(['error' => $e->getMessage()]);
        }
        exit;

    case '/webhook':
        // wsbridge's own webhooks (WSBRIDGE_WEBHOOK_URL). The open webhook comes before the
        // upgrade, with the handshake's cookies: the connection gets the session's user (a
        // presence subscription must then be as that user). A real app verifies WsBridge-Signature
        // first (docs/php.md) and may answer 403 to refuse the connection outright.
        $event = json_decode((string) file_get_contents('php://input'), true);
        if (($event['type'] ?? '') === 'open') {
            parse_str(strtr($event['request']['headers']['Cookie'] ?? '', ['; ' => '&']), $cookies);
            $who = (string) ($cookies['demo_user'] ?? '');
            if (preg_match('/\A[a-z]{1,32}\z/', $who) === 1) {
                header('Content-Type: application/json');
                echo json_encode(['user_id' => $who]);
                exit;
            }
        }
        http_response_code(204);
        exit;

    case '/':
        header('Content-Type: text/html; charset=utf-8');
        $me = json_encode($user);
        $cfg = json_encode(['key' => $key]);
        echo <<<HTML
            <!doctype html>
            <meta charset="utf-8">
            <title>wsbridge + Laravel Echo</title>
            <script src="/assets/pusher.min.js"></script>
            <script src="/assets/echo.iife.js"></script>
            <pre id="log"></pre>
            <script>
            const me = {$me}, cfg = {$cfg};
            const log = (o) => { document.getElementById('log').textContent += JSON.stringify(o) + '\\n'; (window.seen ||= []).push(o); };
            window.Pusher = Pusher;
            // The Echo options of a Laravel app on wsbridge: its host and port, nothing else.
            window.Echo = new Echo.default({
                broadcaster: 'pusher', key: cfg.key, cluster: 'mt1',
                wsHost: location.hostname, wsPort: Number(location.port) || 80, forceTLS: false,
                enabledTransports: ['ws', 'wss'], disableStats: true,
            });
            window.Echo.connector.pusher.connection.bind('connected', () => log({type: 'connected', socket_id: window.Echo.socketId()}));
            </script>
            HTML;
        exit;

    default:
        // /assets/*: pusher-js and laravel-echo from npm, as an app would bundle them.
        if (preg_match('#\A/assets/(pusher\.min\.js|echo\.iife\.js)\z#', $path, $m) === 1) {
            $dir = getenv('ECHO_ASSETS') ?: __DIR__ . '/../../e2e/node_modules';
            $file = $m[1] === 'pusher.min.js' ? "$dir/pusher-js/dist/web/pusher.min.js" : "$dir/laravel-echo/dist/echo.iife.js";
            if (is_file($file)) {
                header('Content-Type: text/javascript');
                readfile($file);
                exit;
            }
        }
        http_response_code(404);
        exit('not found');
}
