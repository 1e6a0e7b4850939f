<?php

declare(strict_types=1);

namespace WsBridge\Tests;

use PHPUnit\Framework\TestCase;
use WsBridge\ApiException;
use WsBridge\BadRequestException;
use WsBridge\Client;
use WsBridge\LimitException;
use WsBridge\NotFoundException;
use WsBridge\Publication;
use WsBridge\TooLargeException;
use WsBridge\TransportException;
use WsBridge\UnauthorizedException;

/**
 * The push client against a real wsbridge, started by examples/php/e2e/phpunit_test.go with:
 *  - WSBRIDGE_TEST_API (TCP, token WSBRIDGE_TEST_TOKEN): alice with two connections and bob
 *    with one, all in room:a; carol with one, which testCloseUser kicks (the Go test then checks
 *    that carol's socket got the close); erin's one receives the binary publication below;
 *  - WSBRIDGE_TEST_SOCKET (a second wsbridge, internal API on a unix socket): dave with one.
 * Without them (a plain `phpunit` run) these tests are skipped; the Go test runs phpunit with
 * --fail-on-skipped.
 */
final class ClientTest extends TestCase
{
    private static function env(string $name): string
    {
        $v = getenv($name);
        if ($v === false || $v === '') {
            self::markTestSkipped("$name is not set: run these through `go test ./examples/php/e2e`");
        }
        return $v;
    }

    private static function api(): Client
    {
        return new Client(self::env('WSBRIDGE_TEST_API'), self::env('WSBRIDGE_TEST_TOKEN'));
    }

    public function testListingAndStatsAgree(): void
    {
        $api = self::api();
        $alice = $api->connections(user: 'alice');
        self::assertSame(2, $alice['count']);
        foreach ($alice['connections'] as $c) {
            self::assertSame('alice', $c['user_id']);
            self::assertContains('room:a', $c['channels']);
            self::assertSame($c, $api->connection($c['id']));
        }
        self::assertSame(3, $api->connections(channel: 'room:a')['count']);
        self::assertSame(1, $api->connections(user: 'bob', channel: 'room:a')['count']);
        $all = $api->connections();
        self::assertSame($all['count'], $api->stats()['connections']);

        $presence = $api->channel('room:a');
        self::assertSame(['alice', 'bob'], $presence['users']);
        self::assertSame(3, $presence['count']);
    }

    public function testPublish(): void
    {
        $api = self::api();
        $aliceIds = array_column($api->connections(user: 'alice')['connections'], 'id');
        self::assertSame(2, $api->publish(Publication::text('to alice')->toUsers('alice')));
        // alice's other tab and bob: everyone in the room but the sender.
        self::assertSame(2, $api->publish(Publication::text('room')->toChannels('room:a')->except($aliceIds[0])));
        // A connection matched several ways receives it once.
        self::assertSame(3, $api->publish(Publication::text('x')->toUsers('alice', 'bob')->toChannels('room:a')->toConnections($aliceIds[1])));
        self::assertSame(0, $api->publish(Publication::text('nobody')->toUsers('nobody-here')));
        self::assertSame($api->stats()['connections'], $api->publish(Publication::text('everyone')->toAll()));
        // The Go test reads this one from erin's socket and compares the bytes.
        self::assertSame(1, $api->publish(Publication::binary((string) hex2bin(self::env('WSBRIDGE_TEST_BLOB_HEX')))->toUsers('erin')));
    }

    public function testBatchIsAllOrNothing(): void
    {
        $api = self::api();
        self::assertSame([2, 1], $api->publishBatch(
            Publication::text('b1')->toUsers('alice'),
            Publication::text('b2')->toUsers('bob'),
        ));
        try {
            $api->publishBatch(Publication::text('ok')->toUsers('alice'), Publication::text('bad')->toChannels(''));
            self::fail('a batch with a bad item was accepted');
        } catch (BadRequestException $e) {
            self::assertSame(400, $e->status);
            self::assertSame('bad_request', $e->error);
            self::assertStringStartsWith('item 1:', $e->detail);
        }
        $this->expectException(TooLargeException::class);
        $api->publishBatch(...array_fill(0, 1001, Publication::text('x')->toUsers('nobody-here')));
    }

    public function testJoinAndLeave(): void
    {
        $api = self::api();
        self::assertSame(2, $api->join('room:b', users: ['alice']));
        self::assertSame(['alice'], $api->channel('room:b')['users']);
        $first = $api->channel('room:b')['connections'][0];
        self::assertSame(1, $api->leave('room:b', connections: [$first]));
        self::assertSame(1, $api->channel('room:b')['count']);
        self::assertSame(1, $api->leave('room:b', users: ['alice']));
        self::assertSame(0, $api->connections(channel: 'room:b')['count']);
    }

    public function testJoinBeyondTheChannelLimit(): void
    {
        $api = self::api(); // this bridge runs with WSBRIDGE_MAX_CHANNELS=3; alice is in room:a
        self::assertSame(2, $api->join('room:c', users: ['alice']));
        self::assertSame(2, $api->join('room:d', users: ['alice']));
        try {
            $api->join('room:e', users: ['alice']);
            self::fail('a fourth channel was joined');
        } catch (LimitException $e) {
            self::assertSame([409, 'limit'], [$e->status, $e->error]);
            self::assertStringContainsString('WSBRIDGE_MAX_CHANNELS', $e->detail);
        }
        self::assertSame(0, $api->channel('room:e')['count'], 'a refused join joined nobody');
        $api->leave('room:c', users: ['alice']);
        $api->leave('room:d', users: ['alice']);
    }

    public function testTypedErrorsCarryTheApisWords(): void
    {
        $api = self::api();
        try {
            $api->connection('nobody.AAAAAAAAAAAAAAAA');
            self::fail('an unknown connection was found');
        } catch (NotFoundException $e) {
            self::assertSame([404, 'not_found', 'no such connection on this node'], [$e->status, $e->error, $e->detail]);
        }
        try {
            $api->closeUser('bob', 999);
            self::fail('close code 999 was accepted');
        } catch (BadRequestException $e) {
            self::assertStringContainsString('999', $e->detail);
        }
        self::assertSame(1, $api->connections(user: 'bob')['count'], 'a refused close closed nothing');
        try {
            (new Client(self::env('WSBRIDGE_TEST_API'), 'wrong-token'))->stats();
            self::fail('a wrong token was accepted');
        } catch (UnauthorizedException $e) {
            self::assertSame(401, $e->status);
            self::assertInstanceOf(ApiException::class, $e);
        }
    }

    public function testCloseUser(): void
    {
        $api = self::api();
        self::assertSame(1, $api->closeUser('carol', 4001, 'kicked'));
    }

    public function testUnixSocket(): void
    {
        $api = new Client('unix:' . self::env('WSBRIDGE_TEST_SOCKET'));
        self::assertSame(1, $api->stats()['connections']);
        self::assertSame('dave', $api->connections()['connections'][0]['user_id']);
        self::assertSame(1, $api->publish(Publication::text('over a socket')->toUsers('dave')));
    }

    public function testUnreachable(): void
    {
        $sock = self::env('WSBRIDGE_TEST_SOCKET') . '.missing';
        try {
            (new Client('unix:' . $sock))->stats();
            self::fail('a missing socket answered');
        } catch (TransportException $e) {
            self::assertStringContainsString('GET /v1/stats', $e->getMessage());
        }
        $this->expectException(TransportException::class);
        (new Client(self::env('WSBRIDGE_TEST_CLOSED_URL'), null, 1.0))->stats();
    }
}
