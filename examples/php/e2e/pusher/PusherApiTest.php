<?php

declare(strict_types=1);

namespace WsBridge\Tests\Live;

use PHPUnit\Framework\TestCase;
use WsBridge\PusherApiException;
use WsBridge\PusherClient;
use WsBridge\PusherSignature;

/**
 * The kit's PusherClient against a real wsbridge in Pusher mode, started by
 * examples/php/e2e/pusherapi_test.go (TestPusherAPIPHPUnit), which has a connection of user
 * alice (a WebSocket) and a Pusher-protocol one in channel "orders", and checks that the events
 * triggered here reach them.
 */
final class PusherApiTest extends TestCase
{
    private static function env(string $name): string
    {
        $v = getenv($name);
        if (!is_string($v) || $v === '') {
            self::fail("$name is not set: run this through go test ./examples/php/e2e -run PusherAPIPHPUnit");
        }
        return $v;
    }

    private static function client(?string $secret = null, ?\Closure $clock = null): PusherClient
    {
        return new PusherClient(self::env('WSBRIDGE_TEST_PUSHER_APP_ID'), self::env('WSBRIDGE_TEST_PUSHER_KEY'),
            $secret ?? self::env('WSBRIDGE_TEST_PUSHER_SECRET'), self::env('WSBRIDGE_TEST_PUSHER_API'), clock: $clock);
    }

    private static function refusal(callable $call): PusherApiException
    {
        try {
            $call();
        } catch (PusherApiException $e) {
            return $e;
        }
        self::fail('the request was accepted');
    }

    public function testTriggerReachesTheChannel(): void
    {
        $pusher = self::client();
        self::assertSame([], $pusher->trigger(['orders'], 'order.shipped', ['id' => 7]));
        self::assertSame(['occupied' => true, 'subscription_count' => 2], $pusher->getChannelInfo('orders', ['subscription_count'])); // alice (WebSocket), bob (Pusher)
        self::assertArrayHasKey('orders', $pusher->getChannels());
        self::assertSame(['channels' => ['orders' => ['subscription_count' => 2]]],
            $pusher->trigger('orders', 'order.counted', 'plain text', '1234.5678', ['subscription_count']));
    }

    public function testBadSignatureIsRefused(): void
    {
        $e = self::refusal(fn () => self::client('not-the-secret')->trigger('orders', 'e', 'x'));
        self::assertSame(401, $e->status);
        self::assertStringStartsWith('Invalid signature: you should have sent HmacSHA256Hex("POST\n/apps/', $e->body);
    }

    public function testStaleTimestampIsRefused(): void
    {
        // Signed 601 s ago: a captured request replayed after Pusher's window.
        $e = self::refusal(fn () => self::client(clock: fn () => time() - 601)->trigger('orders', 'e', 'x'));
        self::assertSame(401, $e->status);
        self::assertStringStartsWith('Timestamp expired: Given timestamp', $e->body);
        // Inside the window it is accepted: the window is Pusher's 600 s, not less.
        self::assertSame([], self::client(clock: fn () => time() - 590)->trigger('orders', 'e', 'x'));
    }

    public function testWrongBodyMd5IsRefused(): void
    {
        $path = '/apps/' . self::env('WSBRIDGE_TEST_PUSHER_APP_ID') . '/events';
        $signedBody = '{"name":"e","channels":["orders"],"data":"signed"}';
        $q = PusherSignature::sign(self::env('WSBRIDGE_TEST_PUSHER_KEY'), self::env('WSBRIDGE_TEST_PUSHER_SECRET'), 'POST', $path, [], $signedBody);
        $ch = curl_init(self::env('WSBRIDGE_TEST_PUSHER_API') . $path . '?' . http_build_query($q));
        curl_setopt_array($ch, [
            CURLOPT_POSTFIELDS => '{"name":"e","channels":["orders"],"data":"swapped"}',
            CURLOPT_HTTPHEADER => ['Content-Type: application/json'],
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_TIMEOUT => 5,
        ]);
        $body = curl_exec($ch);
        self::assertSame(401, curl_getinfo($ch, CURLINFO_RESPONSE_CODE));
        self::assertIsString($body);
        self::assertStringStartsWith('Invalid body_md5', $body);
    }

    public function testPushersLimits(): void
    {
        $pusher = self::client();
        $e = self::refusal(fn () => $pusher->trigger('orders', 'e', str_repeat('x', 10241)));
        self::assertSame(413, $e->status);
        $e = self::refusal(fn () => $pusher->trigger(array_map(fn ($i) => "c$i", range(1, 101)), 'e', 'x'));
        self::assertSame(400, $e->status);
        $e = self::refusal(fn () => $pusher->getPresenceUsers('orders'));
        self::assertSame(400, $e->status);
        self::assertSame([], $pusher->getPresenceUsers('presence-empty'));
    }
}
