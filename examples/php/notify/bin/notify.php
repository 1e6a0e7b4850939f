<?php

declare(strict_types=1);

// The cron-like side: `php bin/notify.php <user> <text>` pushes from a script (a queue worker,
// a cron job), with WSBRIDGE_API / WSBRIDGE_API_TOKEN from the environment.
require __DIR__ . '/../bootstrap.php';

if ($argc !== 3 || !valid_user($argv[1])) {
    fwrite(STDERR, "usage: php bin/notify.php <user> <text>\n");
    exit(2);
}
try {
    printf("delivered to %d page(s)\n", notify($argv[1], $argv[2]));
} catch (WsBridge\ClientException $e) {
    fwrite(STDERR, $e->getMessage() . "\n");
    exit(1);
}
