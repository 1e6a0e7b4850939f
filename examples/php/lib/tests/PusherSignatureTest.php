<?php

declare(strict_types=1);

namespace WsBridge\Tests;

use PHPUnit\Framework\TestCase;
use WsBridge\PusherSignature;
use WsBridge\SignatureException;

final class PusherSignatureTest extends TestCase
{
    /** The worked example of Pusher's HTTP API reference; bridge/pusherapi_test.go checks it too. */
    public function testPushersWorkedExample(): void
    {
        $body = '{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}';
        $q = PusherSignature::sign('278d425bdf160c739803', '7ad3773142a6692b25b8', 'POST', '/apps/3/events', [], $body, 1353088179);
        self::assertSame([
            'auth_key' => '278d425bdf160c739803',
            'auth_timestamp' => '1353088179',
            'auth_version' => '1.0',
            'body_md5' => 'ec365a775a4cd0599faeb73354201b6f',
            'auth_signature' => 'da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c',
        ], $q);
    }

    public function testQueryParametersAreSignedSortedAndUnescaped(): void
    {
        $q = PusherSignature::sign('k', 's', 'GET', '/apps/1/channels', ['info' => 'user_count', 'filter_by_prefix' => 'presence-'], '', 1700000000);
        self::assertArrayNotHasKey('body_md5', $q, 'a GET has no body to sign');
        $expected = "GET\n/apps/1/channels\nauth_key=k&auth_timestamp=1700000000&auth_version=1.0&filter_by_prefix=presence-&info=user_count";
        self::assertSame(hash_hmac('sha256', $expected, 's'), $q['auth_signature']);
    }

    public function testWebhookSignature(): void
    {
        $body = '{"time_ms":1700000000123,"events":[{"channel":"room","name":"channel_occupied"}]}';
        $sig = hash_hmac('sha256', $body, 'secret');
        $d = PusherSignature::verifyWebhook('key', 'secret', 'key', $sig, $body);
        self::assertSame('channel_occupied', $d['events'][0]['name']);
        foreach ([['other-key', $sig, $body], ['key', str_repeat('0', 64), $body], ['key', $sig, $body . ' '], ['key', null, $body]] as [$k, $s, $b]) {
            try {
                PusherSignature::verifyWebhook('key', 'secret', $k, $s, $b);
                self::fail('a webhook with a wrong key, signature or body was accepted');
            } catch (SignatureException $e) {
                self::assertNotSame('', $e->getMessage());
            }
        }
    }
}
