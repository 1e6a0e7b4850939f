<?php

declare(strict_types=1);

namespace WsBridge\Tests;

use PHPUnit\Framework\TestCase;
use WsBridge\CloseEvent;
use WsBridge\Event;
use WsBridge\MessageEvent;
use WsBridge\OpenEvent;
use WsBridge\Publication;
use WsBridge\Reply;
use WsBridge\Webhook;

/**
 * The contract's golden files (bridge/testdata/contract), which the Go tests write from the
 * bridge's own types: every webhook body must parse into the typed event with nothing lost or
 * left over, and every reply built with the kit must be the golden one. A field changed in Go
 * and not here fails one of these.
 */
final class ContractTest extends TestCase
{
    private const DIR = __DIR__ . '/../../../../bridge/testdata/contract';
    private const CONN = 'k3x9q2ab.QX4TT7UZL2C6MRBE';
    private const OTHER = 'k3x9q2ab.Z2M7AAAAAAAAAAAA';
    private const TEXT = '{"type":"chat","text":"hi <all> & you"}';

    /** @return array<string, string> file name without .json => path */
    private static function files(string $prefix): array
    {
        $out = [];
        foreach (glob(self::DIR . "/$prefix*.json") ?: [] as $path) {
            $out[basename($path, '.json')] = $path;
        }
        return $out;
    }

    public static function webhooks(): iterable
    {
        foreach (self::files('webhook_') as $name => $path) {
            yield $name => [$name, $path];
        }
    }

    /** @dataProvider webhooks */
    public function testWebhookParsesWhole(string $name, string $path): void
    {
        $body = (string) file_get_contents($path);
        $wire = json_decode($body, true, 64, JSON_THROW_ON_ERROR);
        // The headers as the bridge sends them with this body; Webhook checks they agree.
        $headers = ['WsBridge-Event' => $wire['type'], 'WsBridge-Event-Id' => $wire['event_id'], 'WsBridge-Connection' => $wire['connection_id']];
        $event = (new Webhook(''))->parse($body, $headers);

        $class = ['open' => OpenEvent::class, 'message' => MessageEvent::class, 'close' => CloseEvent::class][$wire['type']];
        self::assertInstanceOf($class, $event);
        self::assertStringStartsWith('webhook_' . $event->type(), $name);
        // Every field the bridge sends is one the kit reads, with the same value: a field added
        // in Go but not in the kit, or dropped from the kit, makes these differ.
        self::assertSame(self::canon($wire), self::canon(self::wire($event)));
    }

    public function testEveryEventTypeHasAGoldenBody(): void
    {
        $names = array_keys(self::files('webhook_'));
        foreach (['webhook_open', 'webhook_message_text', 'webhook_message_binary', 'webhook_close_client'] as $want) {
            self::assertContains($want, $names);
        }
    }

    /** Every initiator the bridge sends is a CloseEvent constant, and every constant has a golden close. */
    public function testCloseInitiatorsAreTheConstants(): void
    {
        $constants = [];
        foreach ((new \ReflectionClass(CloseEvent::class))->getConstants() as $name => $value) {
            if (str_starts_with($name, 'INITIATOR_')) {
                $constants[] = $value;
            }
        }
        $sent = [];
        foreach (self::files('webhook_close_') as $path) {
            $sent[] = json_decode(file_get_contents($path), true, 512, JSON_THROW_ON_ERROR)['initiator'];
        }
        sort($constants);
        $sent = array_values(array_unique($sent));
        sort($sent);
        self::assertSame($constants, $sent);
        self::assertContains(CloseEvent::INITIATOR_NODE_LOST, $sent);
    }

    /** The typed event back in the wire form, from its public properties only. */
    private static function wire(Event $e): array
    {
        $w = [
            'type' => $e->type(),
            'event_id' => $e->eventId,
            'connection_id' => $e->connectionId,
            'transport' => $e->transport,
            'user_id' => $e->userId,
            'meta' => $e->meta,
            'channels' => $e->channels,
            'time' => $e->time,
        ];
        if ($e instanceof OpenEvent) {
            $r = $e->request;
            $w['request'] = [
                'method' => $r->method,
                'path' => $r->path,
                'query' => $r->query,
                'headers' => $r->headers,
                'remote_addr' => $r->remoteAddr,
                'subprotocols' => $r->subprotocols,
            ];
        } elseif ($e instanceof MessageEvent) {
            $w[$e->binary ? 'data_base64' : 'data'] = $e->binary ? base64_encode($e->data) : $e->data;
            $w['binary'] = $e->binary;
            $w['seq'] = $e->seq;
        } elseif ($e instanceof CloseEvent) {
            $w += [
                'code' => $e->code,
                'reason' => $e->reason,
                'initiator' => $e->initiator,
                'duration_ms' => $e->durationMs,
                'messages_in' => $e->messagesIn,
                'messages_out' => $e->messagesOut,
            ];
        }
        return $w;
    }

    /** @return array<string, \Closure(): Reply> one builder per golden reply file */
    private static function builders(): array
    {
        $bin = "\x00\xffbin";
        return [
            'reply_empty' => static fn () => Reply::accept(),
            'reply_open_user' => static fn () => Reply::accept()->user('42'),
            'reply_open_anonymous' => static fn () => Reply::accept()->user(''),
            'reply_open_subprotocol' => static fn () => Reply::accept()->subprotocol('chat.v1'),
            'reply_message_meta' => static fn () => Reply::accept()->meta(['name' => 'Ann', 'tags' => ['a', 'b'], 'n' => 3]),
            'reply_message_meta_empty' => static fn () => Reply::accept()->meta([]),
            'reply_message_meta_clear' => static fn () => Reply::accept()->meta(null),
            'reply_message_join_leave' => static fn () => Reply::accept()->join('room:1')->join('room:2')->leave('lobby'),
            'reply_message_send' => static fn () => Reply::accept()->send(self::TEXT, 'second'),
            'reply_message_send_binary' => static fn () => Reply::accept()->sendBinary($bin),
            'reply_message_publish_connections' => static fn () => Reply::accept()->publish(Publication::text(self::TEXT)->toConnections(self::CONN, self::OTHER)),
            'reply_message_publish_users' => static fn () => Reply::accept()->publish(Publication::text(self::TEXT)->toUsers('42', '43')),
            'reply_message_publish_channels' => static fn () => Reply::accept()->publish(Publication::text(self::TEXT)->toChannels('room:42')->except(self::CONN)),
            'reply_message_publish_all' => static fn () => Reply::accept()->publish(Publication::binary($bin)->toAll()),
            'reply_message_publish_mixed' => static fn () => Reply::accept()->publish(
                Publication::text(self::TEXT)->toConnections(self::CONN)->toUsers('42')->toChannels('room:42')->except(self::OTHER),
                Publication::binary($bin)->toChannels('room:7'),
            ),
            'reply_message_close' => static fn () => Reply::accept()->close(4001, 'kicked'),
            'reply_close_publish' => static fn () => Reply::accept()->publish(Publication::text('{"type":"left","name":"Ann"}')->toChannels('room:42')->except(self::CONN)),
            // In another order than Go's fields: only the JSON value counts.
            'reply_open_everything' => static fn () => Reply::accept()
                ->subprotocol('chat.v1')
                ->close(1000, 'done')
                ->user('42')
                ->meta(['name' => 'Ann', 'role' => 'admin'])
                ->join('room:42', 'user:42')
                ->leave('lobby')
                ->send('{"type":"welcome"}')
                ->sendBinary($bin)
                ->publish(Publication::text('{"type":"joined","name":"Ann"}')->toChannels('room:42')->except(self::CONN)),
            'reply_open_reject' => static fn () => Reply::reject(401, 'log in first'),
        ];
    }

    /** Each side has every case: a golden reply the kit cannot build, or the reverse, fails. */
    public function testEveryGoldenReplyHasABuilder(): void
    {
        $golden = array_keys(self::files('reply_'));
        $built = array_keys(self::builders());
        sort($golden);
        sort($built);
        self::assertSame($golden, $built);
    }

    public static function replies(): iterable
    {
        foreach (self::files('reply_') as $name => $path) {
            yield $name => [$name, $path];
        }
    }

    /** @dataProvider replies */
    public function testReplyIsTheGoldenOne(string $name, string $path): void
    {
        $golden = json_decode((string) file_get_contents($path), true, 64, JSON_THROW_ON_ERROR);
        $builder = self::builders()[$name] ?? null;
        self::assertNotNull($builder, "no builder for $name");
        $r = $builder();
        self::assertSame($golden['status'], $r->status());
        if (array_key_exists('text', $golden)) {
            self::assertSame($golden['text'], $r->body());
            self::assertSame(['Content-Type' => $golden['content_type']], $r->headers());
            return;
        }
        if (!array_key_exists('body', $golden)) {
            self::assertSame('', $r->body());
            self::assertSame([], $r->headers());
            return;
        }
        self::assertSame(['Content-Type' => 'application/json'], $r->headers());
        // Compared as JSON values with objects kept apart from arrays ({} is not []).
        $file = json_decode((string) file_get_contents($path), false, 64, JSON_THROW_ON_ERROR);
        self::assertSame(self::canonJson(json_encode($file->body)), self::canonJson($r->body()), $name);
    }

    /** The event id echo: headers($event) carries it, emit() without an event does not. */
    public function testEchoesTheEventId(): void
    {
        $event = Event::fromJson((string) file_get_contents(self::DIR . '/webhook_message_text.json'));
        self::assertSame(['WsBridge-Event-Id' => 'ZKQ6W7DSQ7VQ2PZ5N7Z6BVB4EA'], Reply::accept()->headers($event));
        self::assertSame(
            ['Content-Type' => 'application/json', 'WsBridge-Event-Id' => 'ZKQ6W7DSQ7VQ2PZ5N7Z6BVB4EA'],
            Reply::accept()->send('x')->headers($event),
        );
        self::assertSame(['Content-Type' => 'text/plain; charset=utf-8', 'WsBridge-Event-Id' => $event->eventId], Reply::reject(403, 'no')->headers($event));
        self::assertSame([], Reply::accept()->headers());
    }

    /**
     * emit() with an event goes through header() (a separate process: PHPUnit has written
     * output already, so header() would fail here; the CLI sends no headers, so only the body
     * can be seen).
     *
     * @runInSeparateProcess
     */
    public function testEmitWithTheEventWritesTheBody(): void
    {
        $event = Event::fromJson((string) file_get_contents(self::DIR . '/webhook_message_text.json'));
        $this->expectOutputString('{"send":["x"]}');
        Reply::accept()->send('x')->emit($event);
    }

    /** Assoc arrays with sorted keys, recursively, so key order does not count but values do. */
    private static function canon(mixed $v): mixed
    {
        if (!is_array($v)) {
            return $v;
        }
        $v = array_map(self::canon(...), $v);
        if (!array_is_list($v)) {
            ksort($v);
        }
        return $v;
    }

    /** JSON re-encoded with object keys sorted; objects stay objects, arrays arrays. */
    private static function canonJson(string $json): string
    {
        $sort = static function (mixed $v) use (&$sort): mixed {
            if ($v instanceof \stdClass) {
                $a = get_object_vars($v);
                ksort($a);
                return (object) array_map($sort, $a);
            }
            return is_array($v) ? array_map($sort, $v) : $v;
        };
        return json_encode($sort(json_decode($json, false, 64, JSON_THROW_ON_ERROR)), JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    }
}
