<?php

declare(strict_types=1);

namespace WsBridge\Tests;

use PHPUnit\Framework\TestCase;
use WsBridge\CloseEvent;
use WsBridge\Event;
use WsBridge\MessageEvent;
use WsBridge\OpenEvent;
use WsBridge\ProtocolException;
use WsBridge\Signature;
use WsBridge\SignatureException;
use WsBridge\Webhook;

final class EventTest extends TestCase
{
    private const COMMON = [
        'event_id' => 'OZ6ZB4BUN4W6Z7SQ6H3R2RTJXA',
        'connection_id' => 'k3x9q2ab.QX4TT7UZL2C6MRBE',
        'user_id' => '42',
        'meta' => ['name' => 'Ann'],
        'channels' => ['room:42'],
        'time' => '2026-11-21T23:22:19.123Z',
    ];

    private static function json(array $fields): string
    {
        return json_encode($fields + self::COMMON, JSON_THROW_ON_ERROR);
    }

    public function testOpen(): void
    {
        $ev = Event::fromJson(self::json(['type' => 'open', 'user_id' => '', 'meta' => null, 'request' => [
            'method' => 'GET', 'path' => '/ws', 'query' => 'room=42&x[]=1',
            'headers' => ['Cookie' => 'PHPSESSID=9k2v; theme=dark%20blue', 'Origin' => 'https://app.example.com'],
            'remote_addr' => '203.0.113.7:53122', 'subprotocols' => ['chat.v1'],
        ]]));
        self::assertInstanceOf(OpenEvent::class, $ev);
        self::assertSame('open', $ev->type());
        self::assertSame(self::COMMON['event_id'], $ev->eventId);
        self::assertSame(self::COMMON['connection_id'], $ev->connectionId);
        self::assertSame('', $ev->userId);
        self::assertNull($ev->meta);
        self::assertSame(['room:42'], $ev->channels);
        self::assertSame('/ws', $ev->request->path);
        self::assertSame(['room' => '42', 'x' => ['1']], $ev->request->queryParams());
        self::assertSame('9k2v', $ev->request->cookie('PHPSESSID'));
        self::assertSame('dark blue', $ev->request->cookie('theme'));
        self::assertNull($ev->request->cookie('missing'));
        self::assertSame('https://app.example.com', $ev->request->header('origin'));
        self::assertSame('203.0.113.7:53122', $ev->request->remoteAddr);
        self::assertSame(['chat.v1'], $ev->request->subprotocols);
    }

    public function testTextMessage(): void
    {
        $ev = Event::fromJson(self::json(['type' => 'message', 'data' => '{"type":"say","text":"héllo"}', 'binary' => false, 'seq' => 7]));
        self::assertInstanceOf(MessageEvent::class, $ev);
        self::assertFalse($ev->binary);
        self::assertSame(7, $ev->seq);
        self::assertSame(['type' => 'say', 'text' => 'héllo'], $ev->json());
        self::assertSame(['name' => 'Ann'], $ev->meta);
    }

    public function testBinaryMessage(): void
    {
        $bytes = random_bytes(300) . "\0\xff";
        $ev = Event::fromJson(self::json(['type' => 'message', 'data_base64' => base64_encode($bytes), 'binary' => true, 'seq' => 1]));
        self::assertInstanceOf(MessageEvent::class, $ev);
        self::assertTrue($ev->binary);
        self::assertSame($bytes, $ev->data);
        $this->expectException(ProtocolException::class);
        $ev->json();
    }

    public function testClose(): void
    {
        $ev = Event::fromJson(self::json(['type' => 'close', 'code' => 4001, 'reason' => 'kicked', 'initiator' => 'api',
            'duration_ms' => 1234, 'messages_in' => 3, 'messages_out' => 9]));
        self::assertInstanceOf(CloseEvent::class, $ev);
        self::assertSame([4001, 'kicked', 'api', 1234, 3, 9], [$ev->code, $ev->reason, $ev->initiator, $ev->durationMs, $ev->messagesIn, $ev->messagesOut]);
    }

    /** "transport" names what the client came by; a body without it is from a WebSocket-only bridge. */
    public function testTransport(): void
    {
        $msg = ['type' => 'message', 'data' => 'x', 'binary' => false, 'seq' => 1];
        self::assertSame('sse', Event::fromJson(self::json($msg + ['transport' => 'sse']))->transport);
        self::assertSame('ws', Event::fromJson(self::json($msg + ['transport' => 'ws']))->transport);
        self::assertSame('ws', Event::fromJson(self::json($msg))->transport);
    }

    public function testMalformedBodies(): void
    {
        $bad = [
            'not json' => '{',
            'a list' => '[1]',
            'unknown type' => self::json(['type' => 'bogus']),
            'no event id' => json_encode(['type' => 'close'] + array_diff_key(self::COMMON, ['event_id' => 1])),
            'bad base64' => self::json(['type' => 'message', 'data_base64' => '***', 'binary' => true, 'seq' => 1]),
            'text without data' => self::json(['type' => 'message', 'binary' => false, 'seq' => 1]),
            'open without request' => self::json(['type' => 'open']),
            'channels not strings' => json_encode(['type' => 'close', 'channels' => [1]] + self::COMMON),
            'transport not a string' => self::json(['type' => 'message', 'data' => 'x', 'binary' => false, 'seq' => 1, 'transport' => 1]),
        ];
        foreach ($bad as $name => $body) {
            try {
                Event::fromJson($body);
                self::fail("$name: accepted");
            } catch (ProtocolException $e) {
                self::assertNotSame('', $e->getMessage(), $name);
            }
        }
    }

    public function testWebhookChecksSignatureThenHeaders(): void
    {
        $body = self::json(['type' => 'close', 'code' => 1000, 'reason' => '', 'initiator' => 'client',
            'duration_ms' => 1, 'messages_in' => 0, 'messages_out' => 0]);
        $now = 1_800_000_000;
        $hook = new Webhook('s3cret');
        $headers = [
            'WsBridge-Signature' => Signature::sign('s3cret', $body, $now),
            'WsBridge-Event' => 'close',
            'WsBridge-Event-Id' => self::COMMON['event_id'],
            'wsbridge-connection' => self::COMMON['connection_id'],
        ];
        self::assertSame(self::COMMON['event_id'], $hook->parse($body, $headers, $now)->eventId);

        try {
            $hook->parse($body, ['WsBridge-Event-Id' => 'OTHER'] + $headers, $now);
            self::fail('a header that disagrees with the body was accepted');
        } catch (ProtocolException $e) {
            self::assertStringContainsString('wsbridge-event-id', $e->getMessage());
        }
        try {
            $hook->parse($body, array_diff_key($headers, ['WsBridge-Signature' => 1]), $now);
            self::fail('an unsigned webhook was accepted');
        } catch (SignatureException $e) {
            self::assertSame(SignatureException::MALFORMED, $e->reason);
        }
        try {
            $hook->parse($body, $headers, $now + 301);
            self::fail('a replayed webhook was accepted');
        } catch (SignatureException $e) {
            self::assertSame(SignatureException::EXPIRED, $e->reason);
        }
        // Without a secret (local experiments) nothing is checked but the body.
        self::assertInstanceOf(CloseEvent::class, (new Webhook(''))->parse($body, []));
    }
}
