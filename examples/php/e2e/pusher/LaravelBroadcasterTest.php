<?php

declare(strict_types=1);

namespace WsBridge\Tests\Live;

use Illuminate\Broadcasting\BroadcastException;
use Illuminate\Broadcasting\Broadcasters\PusherBroadcaster;
use Illuminate\Broadcasting\Channel;
use Illuminate\Http\Request;
use PHPUnit\Framework\TestCase;

// Laravel 8's own broadcaster (Debian's php-laravel-framework) over the kit's Pusher SDK
// stand-in (examples/php/lib/pusher-compat), against the real wsbridge that
// examples/php/e2e/pusherapi_test.go starts; it checks on the socket that the event arrived.
require_once '/usr/share/php/Illuminate/Broadcasting/autoload.php';
require_once '/usr/share/php/Illuminate/Http/autoload.php';
require_once __DIR__ . '/../../lib/pusher-compat/autoload.php';

final class LaravelBroadcasterTest extends TestCase
{
    private static function env(string $name): string
    {
        $v = getenv($name);
        if (!is_string($v) || $v === '') {
            self::fail("$name is not set: run this through go test ./examples/php/e2e -run PusherAPIPHPUnit");
        }
        return $v;
    }

    /** The broadcaster as BroadcastManager::createPusherDriver builds it from config/broadcasting.php. */
    private static function broadcaster(?string $secret = null): PusherBroadcaster
    {
        $api = parse_url(self::env('WSBRIDGE_TEST_PUSHER_API'));
        return new PusherBroadcaster(new \Pusher\Pusher(self::env('WSBRIDGE_TEST_PUSHER_KEY'), $secret ?? self::env('WSBRIDGE_TEST_PUSHER_SECRET'),
            self::env('WSBRIDGE_TEST_PUSHER_APP_ID'), ['host' => $api['host'], 'port' => $api['port'], 'scheme' => 'http', 'useTLS' => false, 'cluster' => 'mt1']));
    }

    public function testBroadcastReachesTheChannel(): void
    {
        // 'socket' is what toOthers() puts in the payload (the browser's X-Socket-ID): Laravel
        // sends it as socket_id, and that Pusher connection, subscribed to orders, is left out.
        self::broadcaster()->broadcast([new Channel('orders')], 'App\\Events\\OrderShipped', ['order' => ['id' => 8], 'socket' => self::env('WSBRIDGE_TEST_PUSHER_SOCKET')]);
        $this->addToAssertionCount(1); // no exception: wsbridge answered 200
    }

    public function testRefusalBecomesBroadcastException(): void
    {
        $this->expectException(BroadcastException::class);
        $this->expectExceptionMessageMatches('/^Pusher error: .*401 Invalid signature/');
        self::broadcaster('not-the-secret')->broadcast([new Channel('orders')], 'e', ['x' => 1]);
    }

    public function testPrivateChannelAuthorisation(): void
    {
        $request = Request::create('/broadcasting/auth', 'POST', ['channel_name' => 'private-orders', 'socket_id' => '1234.5678']);
        $auth = self::broadcaster()->validAuthenticationResponse($request, true);
        $key = self::env('WSBRIDGE_TEST_PUSHER_KEY');
        self::assertSame(['auth' => $key . ':' . hash_hmac('sha256', '1234.5678:private-orders', self::env('WSBRIDGE_TEST_PUSHER_SECRET'))], $auth);
    }

    public function testPresenceChannelAuthorisation(): void
    {
        $request = Request::create('/broadcasting/auth', 'POST', ['channel_name' => 'presence-room', 'socket_id' => '1234.5678']);
        $request->setUserResolver(fn () => new class {
            public function getAuthIdentifier(): int
            {
                return 7;
            }
        });
        // $result is what the app's channel callback returned: the member's user_info.
        $auth = self::broadcaster()->validAuthenticationResponse($request, ['name' => 'Ann']);
        $channelData = '{"user_id":7,"user_info":{"name":"Ann"}}'; // Laravel's integer id, as the SDK sends it
        $key = self::env('WSBRIDGE_TEST_PUSHER_KEY');
        self::assertSame(['auth' => $key . ':' . hash_hmac('sha256', '1234.5678:presence-room:' . $channelData, self::env('WSBRIDGE_TEST_PUSHER_SECRET')), 'channel_data' => $channelData], $auth);
    }
}
