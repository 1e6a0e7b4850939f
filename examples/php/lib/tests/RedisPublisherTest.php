<?php

declare(strict_types=1);

namespace WsBridge\Tests;

use PHPUnit\Framework\TestCase;
use WsBridge\Publication;
use WsBridge\PublisherException;
use WsBridge\RedisPublisher;
use WsBridge\Resp;

/**
 * RedisPublisher against a real redis-server that each test starts on a free loopback port
 * (Debian's redis-server; under CI a missing one fails, elsewhere it skips): a subscriber of
 * <prefix>:publish receives exactly the bytes of the /v1/publish JSON, through php-redis and
 * through the built-in RESP client, with AUTH and SELECT from the URL.
 */
final class RedisPublisherTest extends TestCase
{
    /** @var resource|null */
    private $server = null;
    private int $port = 0;

    protected function tearDown(): void
    {
        if ($this->server !== null) {
            proc_terminate($this->server, 9);
            proc_close($this->server);
            $this->server = null;
        }
    }

    /** @return array<string, array{string}> */
    public static function transports(): array
    {
        return ['built-in RESP client' => ['socket'], 'php-redis' => ['phpredis']];
    }

    /** @dataProvider transports */
    public function testSubscriberReceivesExactlyTheBytes(string $transport): void
    {
        self::requireTransport($transport);
        $this->startRedis();
        $sub = $this->subscribe('app.ws:publish');
        $pub = new RedisPublisher("redis://127.0.0.1:{$this->port}", 'app.ws', transport: $transport);

        self::assertSame(1, $pub->publish(Publication::text("héllo \"wörld\"\n✓ </b>")->toChannels('room:1')->except('n1.abc')));
        self::assertSame('{"to":{"channels":["room:1"]},"except":"n1.abc","data":"héllo \"wörld\"\n✓ </b>"}', self::nextMessage($sub, 'app.ws:publish'));

        self::assertSame(1, $pub->publishBatch(Publication::binary("\x00\xff")->toUsers('42'), Publication::text('b')->toAll()));
        self::assertSame('[{"to":{"users":["42"]},"data_base64":"AP8="},{"to":{"all":true},"data":"b"}]', self::nextMessage($sub, 'app.ws:publish'));

        $raw = '{"to":{"all":true},"data":"as is"}';
        self::assertSame(1, $pub->publishJson($raw));
        self::assertSame($raw, self::nextMessage($sub, 'app.ws:publish'));
    }

    /** @dataProvider transports */
    public function testAuthAndSelectFromTheUrl(string $transport): void
    {
        self::requireTransport($transport);
        $this->startRedis('--requirepass', 's3cr/t');
        $sub = $this->subscribe('wsbridge:publish', 's3cr/t');
        $pub = new RedisPublisher("redis://:s3cr%2Ft@127.0.0.1:{$this->port}/3", transport: $transport);
        self::assertSame(1, $pub->publish(Publication::text('x')->toAll()));
        self::assertSame('{"to":{"all":true},"data":"x"}', self::nextMessage($sub, 'wsbridge:publish'));

        $wrong = new RedisPublisher("redis://:nope@127.0.0.1:{$this->port}", transport: $transport);
        try {
            $wrong->publish(Publication::text('x')->toAll());
            self::fail('published with a wrong password');
        } catch (PublisherException $e) {
            self::assertStringContainsString('AUTH failed', $e->getMessage());
            self::assertStringNotContainsString('nope', $e->getMessage(), 'the password is in the message');
        }
        $noAuth = new RedisPublisher("redis://127.0.0.1:{$this->port}", transport: $transport);
        $this->expectException(PublisherException::class);
        $this->expectExceptionMessageMatches('/NOAUTH|Authentication required/i');
        $noAuth->publish(Publication::text('x')->toAll());
    }

    /** @dataProvider transports */
    public function testNoServer(string $transport): void
    {
        self::requireTransport($transport);
        $free = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int) substr((string) stream_socket_get_name($free, false), strlen('127.0.0.1:'));
        fclose($free);
        $pub = new RedisPublisher("redis://127.0.0.1:$port", transport: $transport);
        $this->expectException(PublisherException::class);
        $this->expectExceptionMessageMatches('/refused|cannot connect/i');
        $pub->publish(Publication::text('x')->toAll());
    }

    public function testNoSubscriberIsZero(): void
    {
        $this->startRedis();
        $pub = new RedisPublisher("redis://127.0.0.1:{$this->port}", transport: 'socket');
        self::assertSame(0, $pub->publish(Publication::text('x')->toAll()), 'no node listening');
    }

    /** @return array<string, array{string, array<string, mixed>}> */
    public static function urls(): array
    {
        return [
            'host only' => ['redis://10.0.0.1', ['scheme' => 'redis', 'host' => '10.0.0.1', 'port' => 6379, 'user' => null, 'password' => null, 'db' => 0]],
            'port and db' => ['redis://r:6380/2', ['host' => 'r', 'port' => 6380, 'db' => 2]],
            'password only' => ['redis://:p%40ss@r/0', ['user' => null, 'password' => 'p@ss']],
            'ACL user' => ['redis://app:pw@r', ['user' => 'app', 'password' => 'pw']],
            'TLS' => ['rediss://r:6390', ['scheme' => 'rediss', 'port' => 6390]],
            'unix socket' => ['unix:///run/redis/redis.sock?db=1&password=pw', ['scheme' => 'unix', 'path' => '/run/redis/redis.sock', 'db' => 1, 'password' => 'pw']],
        ];
    }

    /**
     * @dataProvider urls
     * @param array<string, mixed> $want
     */
    public function testParseUrl(string $url, array $want): void
    {
        $got = RedisPublisher::parseUrl($url);
        foreach ($want as $k => $v) {
            self::assertSame($v, $got[$k], $k);
        }
    }

    /** @return array<string, array{string, string}> */
    public static function badUrls(): array
    {
        return [
            'http' => ['http://r:6379', 'want redis://'],
            'no host' => ['redis://', 'want redis://'],
            'db not a number' => ['redis://r/main', 'database number'],
            'user without password' => ['redis://app@r', 'a user without a password'],
            'relative unix path' => ['unix://run/redis.sock', 'absolute'],
            'unix db not a number' => ['unix:///r.sock?db=x', 'db must be a number'],
        ];
    }

    /** @dataProvider badUrls */
    public function testParseUrlRefuses(string $url, string $want): void
    {
        $this->expectException(\InvalidArgumentException::class);
        $this->expectExceptionMessage($want);
        RedisPublisher::parseUrl($url);
    }

    public function testPasswordNotInUrlError(): void
    {
        try {
            RedisPublisher::parseUrl('redis://:hunter2@r/main');
            self::fail('accepted');
        } catch (\InvalidArgumentException $e) {
            self::assertStringNotContainsString('hunter2', $e->getMessage());
        }
    }

    private static function requireTransport(string $transport): void
    {
        if ($transport === 'phpredis' && !extension_loaded('redis')) {
            self::missing('the redis extension is not loaded (Debian package php-redis)');
        }
    }

    private static function missing(string $what): void
    {
        if (getenv('CI') !== false && getenv('CI') !== '') {
            self::fail("$what; CI must provide it (.ci/run installs it)");
        }
        self::markTestSkipped($what);
    }

    /** Starts redis-server on a free loopback port, without persistence, and waits for it. */
    private function startRedis(string ...$args): void
    {
        $bin = '';
        foreach (['/usr/bin/redis-server', '/usr/local/bin/redis-server'] as $candidate) {
            if (is_executable($candidate)) {
                $bin = $candidate;
                break;
            }
        }
        if ($bin === '') {
            self::missing('redis-server is not installed (Debian package redis-server)');
        }
        $free = stream_socket_server('tcp://127.0.0.1:0');
        $this->port = (int) substr((string) stream_socket_get_name($free, false), strlen('127.0.0.1:'));
        fclose($free);
        $cmd = [$bin, '--port', (string) $this->port, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...$args];
        $this->server = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['file', '/dev/null', 'w']], $pipes);
        self::assertIsResource($this->server, 'start redis-server');
        $deadline = microtime(true) + 10;
        while (($s = @stream_socket_client("tcp://127.0.0.1:{$this->port}", $errno, $errstr, 1)) === false) {
            if (microtime(true) > $deadline || !proc_get_status($this->server)['running']) {
                self::fail("redis-server did not accept connections on port {$this->port} within 10s: $errstr");
            }
            usleep(10_000); // polling another process's port: no event to wait on
        }
        fclose($s);
    }

    /**
     * A raw subscriber, independent of the publisher's transport.
     *
     * @return resource
     */
    private function subscribe(string $channel, ?string $password = null)
    {
        $s = stream_socket_client("tcp://127.0.0.1:{$this->port}", $errno, $errstr, 2);
        self::assertIsResource($s, "subscriber: $errstr");
        stream_set_timeout($s, 5);
        if ($password !== null) {
            fwrite($s, Resp::command('AUTH', $password));
            self::assertSame('OK', Resp::read($s));
        }
        fwrite($s, Resp::command('SUBSCRIBE', $channel));
        self::assertSame(['subscribe', $channel, 1], Resp::read($s));
        return $s;
    }

    /** @param resource $sub */
    private static function nextMessage($sub, string $channel): string
    {
        $m = Resp::read($sub);
        self::assertIsArray($m);
        self::assertSame(['message', $channel], array_slice($m, 0, 2));
        return $m[2];
    }
}
