<?php

declare(strict_types=1);

// Shared by the notify example's scripts: the kit and the settings from the environment.
require __DIR__ . '/../lib/autoload.php';

use WsBridge\Client;
use WsBridge\Publication;

function setting(string $name, string $default = ''): string
{
    $v = getenv($name);
    return $v === false || $v === '' ? $default : $v;
}

/** A user name as this example accepts it (from a form, a cookie, the command line). */
function valid_user(string $user): bool
{
    return preg_match('/^[a-z0-9_-]{1,32}$/D', $user) === 1;
}

/** The channel every page of $user joins (webhook.php). */
function notify_channel(string $user): string
{
    return 'notify:' . $user;
}

/**
 * Pushes one notification to every open page of $user; returns how many pages got it. This is
 * the whole server-push story: one HTTP call from any PHP code, no socket held by PHP. It goes
 * to the user's channel rather than toUsers(): only a publication to one channel has a position
 * in its history, which is what lets a page that was offline recover it.
 */
function notify(string $user, string $text): int
{
    $api = new Client(setting('WSBRIDGE_API', 'http://127.0.0.1:8081'), setting('WSBRIDGE_API_TOKEN') ?: null);
    $payload = json_encode(['type' => 'notification', 'text' => $text, 'at' => gmdate('H:i:s')], JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE);
    return $api->publish(Publication::text($payload)->toChannels(notify_channel($user)));
}
