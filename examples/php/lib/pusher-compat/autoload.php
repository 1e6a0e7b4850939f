<?php

declare(strict_types=1);

// A stand-in for the Pusher PHP SDK (pusher/pusher-php-server) where it cannot be installed
// (Debian has no package, Packagist may be unreachable): the classes Laravel's pusher
// broadcaster uses, Pusher\Pusher, Pusher\ApiErrorException and Pusher\PusherException, over
// the wsbridge kit's PusherClient. Require it after the kit's autoload.php, and never together
// with the real SDK. docs/pusher.md says what it covers.
require_once __DIR__ . '/../autoload.php';
require_once __DIR__ . '/Pusher.php';
