<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * Publishes through Redis instead of the push API, for a cluster of wsbridge nodes with
 * WSBRIDGE_BROKER=redis: `PUBLISH <prefix>:publish <the POST /v1/publish JSON>`. Every node
 * receives it and delivers it to its own connections; a node decodes it as strictly as the API
 * and drops (logs and counts) one it refuses, whole. No HTTP hop, no node to pick.
 *
 *     $pub = new RedisPublisher(getenv('WSBRIDGE_REDIS_URL') ?: 'redis://127.0.0.1:6379/0');
 *     $nodes = $pub->publish(Publication::text('hi')->toChannels('room:1'));  // 3: three nodes heard it
 *
 * It uses php-redis when the extension is loaded, else a minimal RESP client over a socket (no
 * dependency either way). At most once, like Redis pub/sub: a node that is reconnecting misses
 * it. publish() returns how many subscribers Redis handed it to (one per listening node), so 0
 * means no node heard it. Errors are PublisherException, with Redis's own words.
 */
final class RedisPublisher
{
    private readonly string $channel;
    /** @var array{scheme: string, host: string, port: int, path: ?string, user: ?string, password: ?string, db: int} */
    private readonly array $target;
    private readonly bool $phpredis;
    /** @var resource|null the socket, without php-redis */
    private $stream = null;
    private ?\Redis $redis = null;

    public function __construct(
        /**
         * WSBRIDGE_REDIS_URL's form: redis://[[user]:password@]host[:port][/db],
         * rediss://... (TLS), or unix:///path/to/redis.sock[?db=N&password=...].
         */
        string $url = 'redis://127.0.0.1:6379/0',
        /** WSBRIDGE_CLUSTER_PREFIX: the channel is "<prefix>:publish". */
        string $prefix = 'wsbridge',
        /** Connect and reply timeout, seconds. */
        private readonly float $timeout = 1.0,
        /** Force a transport: 'phpredis' or 'socket'; null picks php-redis when it is loaded. */
        ?string $transport = null,
    ) {
        $this->target = self::parseUrl($url);
        $this->channel = $prefix . ':publish';
        $this->phpredis = match ($transport) {
            null => extension_loaded('redis'),
            'phpredis' => extension_loaded('redis') ? true : throw new \InvalidArgumentException('transport phpredis: the redis extension is not loaded (Debian package php-redis)'),
            'socket' => false,
            default => throw new \InvalidArgumentException("transport must be 'phpredis', 'socket' or null, got \"$transport\""),
        };
    }

    /** Publishes one publication; returns how many nodes Redis handed it to. */
    public function publish(Publication $publication): int
    {
        return $this->publishJson(json_encode($publication->toArray(), JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE));
    }

    /** Publishes a batch, which each node applies all or none; returns how many nodes heard it. */
    public function publishBatch(Publication ...$publications): int
    {
        if ($publications === []) {
            throw new \LogicException('an empty batch: wsbridge would refuse it');
        }
        $items = array_map(static fn (Publication $p) => $p->toArray(), $publications);
        return $this->publishJson(json_encode($items, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE));
    }

    /** Publishes a body as is: the JSON of POST /v1/publish, one publication or an array. */
    public function publishJson(string $json): int
    {
        try {
            return $this->phpredis ? $this->viaPhpRedis($json) : $this->viaSocket($json);
        } catch (PublisherException $e) {
            // The connection's state is unknown after a failure: the next call starts afresh.
            $this->close();
            throw $e;
        }
    }

    /** Closes the connection (it is opened again by the next publish). */
    public function close(): void
    {
        if ($this->stream !== null) {
            fclose($this->stream);
            $this->stream = null;
        }
        if ($this->redis !== null) {
            try {
                $this->redis->close();
            } catch (\RedisException) {
                // Already gone: nothing to close.
            }
            $this->redis = null;
        }
    }

    public function __destruct()
    {
        $this->close();
    }

    private function viaSocket(string $json): int
    {
        if ($this->stream === null) {
            $t = $this->target;
            $address = $t['scheme'] === 'unix' ? 'unix://' . $t['path'] : ($t['scheme'] === 'rediss' ? 'tls' : 'tcp') . "://{$t['host']}:{$t['port']}";
            $stream = @stream_socket_client($address, $errno, $errstr, $this->timeout);
            if ($stream === false) {
                throw new PublisherException("redis: cannot connect to $address: $errstr ($errno)");
            }
            $seconds = (int) $this->timeout;
            stream_set_timeout($stream, $seconds, (int) (($this->timeout - $seconds) * 1e6));
            $this->stream = $stream;
            if ($t['password'] !== null) {
                $args = $t['user'] !== null ? [$t['user'], $t['password']] : [$t['password']];
                $this->call('AUTH', ...$args);
            }
            if ($t['db'] !== 0) {
                $this->call('SELECT', (string) $t['db']);
            }
        }
        $n = $this->call('PUBLISH', $this->channel, $json);
        if (!is_int($n)) {
            throw new PublisherException('redis: PUBLISH answered ' . json_encode($n) . ', not a number of receivers');
        }
        return $n;
    }

    /** Sends one command and reads its reply; an error reply names the command. */
    private function call(string ...$args): string|int|array|null
    {
        $cmd = Resp::command(...$args);
        for ($sent = 0; $sent < strlen($cmd); $sent += $n) {
            $n = @fwrite($this->stream, substr($cmd, $sent));
            if ($n === false || $n === 0) {
                throw new PublisherException("redis: {$args[0]}: connection lost while sending");
            }
        }
        try {
            return Resp::read($this->stream);
        } catch (PublisherException $e) {
            // AUTH's and SELECT's errors do not say which command failed; say it.
            throw new PublisherException("{$args[0]} failed: " . $e->getMessage(), 0, $e);
        }
    }

    private function viaPhpRedis(string $json): int
    {
        try {
            if ($this->redis === null) {
                $t = $this->target;
                $r = new \Redis();
                $host = match ($t['scheme']) {
                    'unix' => $t['path'],
                    'rediss' => 'tls://' . $t['host'],
                    default => $t['host'],
                };
                if (!$r->connect($host, $t['scheme'] === 'unix' ? 0 : $t['port'], $this->timeout)) {
                    throw new PublisherException("redis: cannot connect to $host");
                }
                $r->setOption(\Redis::OPT_READ_TIMEOUT, $this->timeout);
                $this->redis = $r;
                if ($t['password'] !== null) {
                    self::step('AUTH', $r, static fn () => $r->auth($t['user'] !== null ? [$t['user'], $t['password']] : $t['password']));
                }
                if ($t['db'] !== 0) {
                    self::step('SELECT', $r, static fn () => $r->select($t['db']));
                }
            }
            $n = $this->redis->publish($this->channel, $json);
        } catch (\RedisException $e) {
            throw new PublisherException('redis: ' . $e->getMessage(), 0, $e);
        }
        if (!is_int($n)) {
            throw new PublisherException('PUBLISH failed: redis: ' . ($this->redis->getLastError() ?? 'no answer'));
        }
        return $n;
    }

    /** Runs one setup command of php-redis, which fails by false or by exception: both say which. */
    private static function step(string $command, \Redis $r, \Closure $call): void
    {
        try {
            $ok = $call();
        } catch (\RedisException $e) {
            throw new PublisherException("$command failed: redis: " . $e->getMessage(), 0, $e);
        }
        if ($ok !== true) {
            throw new PublisherException("$command failed: redis: " . ($r->getLastError() ?? 'refused'));
        }
    }

    /**
     * @return array{scheme: string, host: string, port: int, path: ?string, user: ?string, password: ?string, db: int}
     */
    public static function parseUrl(string $url): array
    {
        $bad = static fn (string $why) => new \InvalidArgumentException("redis URL \"" . preg_replace('~//[^@/]*@~', '//***@', $url) . "\": $why");
        if (str_starts_with($url, 'unix://')) {
            $rest = substr($url, 7);
            [$path, $query] = array_pad(explode('?', $rest, 2), 2, '');
            if (!str_starts_with($path, '/')) {
                throw $bad('want unix:///absolute/path.sock');
            }
            parse_str($query, $q);
            $db = $q['db'] ?? '0';
            if (!is_string($db) || preg_match('/^\d{1,5}$/', $db) !== 1) {
                throw $bad('db must be a number');
            }
            $password = isset($q['password']) && is_string($q['password']) ? $q['password'] : null;
            $user = isset($q['username']) && is_string($q['username']) ? $q['username'] : null;
            return ['scheme' => 'unix', 'host' => '', 'port' => 0, 'path' => rawurldecode($path), 'user' => $user, 'password' => $password, 'db' => (int) $db];
        }
        $p = parse_url($url);
        if ($p === false || !isset($p['scheme'], $p['host']) || !in_array($p['scheme'], ['redis', 'rediss'], true)) {
            throw $bad('want redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path');
        }
        $path = trim($p['path'] ?? '', '/');
        if ($path !== '' && preg_match('/^\d{1,5}$/', $path) !== 1) {
            throw $bad("the path must be a database number, got \"$path\"");
        }
        $user = isset($p['user']) && $p['user'] !== '' ? rawurldecode($p['user']) : null;
        $password = isset($p['pass']) ? rawurldecode($p['pass']) : null;
        if ($password === null && $user !== null) {
            throw $bad('a user without a password; a password alone is written redis://:password@host');
        }
        return ['scheme' => $p['scheme'], 'host' => $p['host'], 'port' => $p['port'] ?? 6379, 'path' => null,
            'user' => $user, 'password' => $password, 'db' => (int) ($path === '' ? 0 : $path)];
    }
}
