<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * The internal push API of wsbridge (docs/PROTOCOL.md, "Push API"), over TCP or a unix socket.
 *
 *     $api = new Client('http://127.0.0.1:8081', getenv('WSBRIDGE_API_TOKEN') ?: null);
 *     $api = new Client('unix:/run/wsbridge/api.sock');
 *     $api->publish(Publication::text('hi')->toUsers('42'));   // 2: both of 42's tabs
 *
 * Errors are exceptions: TransportException (unreachable, timeout) or an ApiException subclass
 * (BadRequestException, UnauthorizedException, ...) carrying the API's error and detail.
 */
final class Client
{
    private readonly string $base;
    private readonly ?string $socket;
    private ?\CurlHandle $curl = null;

    public function __construct(
        /** http(s)://host:port, or unix:/path/to.sock (WSBRIDGE_INTERNAL_LISTEN's form). */
        string $endpoint = 'http://127.0.0.1:8081',
        private readonly ?string $token = null,
        /** Whole-request limit, seconds. Keep it short: a webhook may be waiting on this call. */
        private readonly float $timeout = 2.0,
        private readonly float $connectTimeout = 1.0,
    ) {
        if (str_starts_with($endpoint, 'unix:')) {
            $this->socket = substr($endpoint, 5);
            $this->base = 'http://wsbridge'; // the host name is not used over a socket
        } elseif (preg_match('~^https?://~', $endpoint) === 1) {
            $this->socket = null;
            $this->base = rtrim($endpoint, '/');
        } else {
            throw new \InvalidArgumentException("endpoint must be http(s)://host:port or unix:/path, got \"$endpoint\"");
        }
    }

    /** Sends one publication; returns how many connections on this node it was queued for. */
    public function publish(Publication $publication): int
    {
        return $this->call('POST', '/v1/publish', $publication->toArray())['delivered'];
    }

    /**
     * Sends several publications in one request, applied all or none.
     *
     * @return list<int> the deliveries of each, in order
     */
    public function publishBatch(Publication ...$publications): array
    {
        $items = array_map(static fn (Publication $p) => $p->toArray(), $publications);
        return array_column($this->call('POST', '/v1/publish', $items)['results'], 'delivered');
    }

    /** Closes one connection (code 1000 or 3000-4999); returns 1, or 0 if it was gone. */
    public function closeConnection(string $id, int $code = 1000, string $reason = ''): int
    {
        return $this->call('POST', '/v1/connections/' . rawurlencode($id) . '/close', ['code' => $code, 'reason' => $reason])['closed'];
    }

    /** Closes every connection of a user; returns how many. */
    public function closeUser(string $userId, int $code = 1000, string $reason = ''): int
    {
        return $this->call('POST', '/v1/users/' . rawurlencode($userId) . '/close', ['code' => $code, 'reason' => $reason])['closed'];
    }

    /**
     * Joins connections, and the open connections of users, to a channel.
     *
     * @param list<string> $connections
     * @param list<string> $users
     * @return int connections whose membership changed
     */
    public function join(string $channel, array $connections = [], array $users = []): int
    {
        return $this->call('POST', '/v1/channels/' . rawurlencode($channel) . '/join', self::members($connections, $users))['joined'];
    }

    /**
     * @param list<string> $connections
     * @param list<string> $users
     * @return int connections whose membership changed
     */
    public function leave(string $channel, array $connections = [], array $users = []): int
    {
        return $this->call('POST', '/v1/channels/' . rawurlencode($channel) . '/leave', self::members($connections, $users))['left'];
    }

    /**
     * Lists connections: all, a user's, a channel's, or a user's in a channel.
     *
     * @return array{count: int, connections: list<array<string, mixed>>}
     */
    public function connections(?string $user = null, ?string $channel = null): array
    {
        $query = http_build_query(array_filter(['user' => $user, 'channel' => $channel], static fn ($v) => $v !== null), '', '&', PHP_QUERY_RFC3986);
        return $this->call('GET', '/v1/connections' . ($query === '' ? '' : '?' . $query));
    }

    /**
     * One connection: id, user_id, channels, meta, remote_addr, ...
     *
     * @throws NotFoundException when it is not on this node
     * @return array<string, mixed>
     */
    public function connection(string $id): array
    {
        return $this->call('GET', '/v1/connections/' . rawurlencode($id));
    }

    /**
     * Presence: a channel's connections and distinct users.
     *
     * @return array{channel: string, connections: list<string>, users: list<string>, count: int}
     */
    public function channel(string $name): array
    {
        return $this->call('GET', '/v1/channels/' . rawurlencode($name));
    }

    /** @return array<string, mixed> node, connections, users, channels, counters */
    public function stats(): array
    {
        return $this->call('GET', '/v1/stats');
    }

    /**
     * @param list<string> $connections
     * @param list<string> $users
     * @return array<string, list<string>>
     */
    private static function members(array $connections, array $users): array
    {
        return array_filter(['connections' => array_values($connections), 'users' => array_values($users)], static fn ($v) => $v !== []);
    }

    /**
     * @param array<mixed>|null $body
     * @return array<string, mixed>
     */
    private function call(string $method, string $path, ?array $body = null): array
    {
        // One handle per client: curl keeps the connection alive between calls.
        $ch = $this->curl ??= curl_init();
        curl_reset($ch);
        $headers = ['Accept: application/json'];
        if ($this->token !== null && $this->token !== '') {
            $headers[] = 'Authorization: Bearer ' . $this->token;
        }
        $options = [
            CURLOPT_URL => $this->base . $path,
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_CONNECTTIMEOUT_MS => (int) ($this->connectTimeout * 1000),
            CURLOPT_TIMEOUT_MS => (int) ($this->timeout * 1000),
            CURLOPT_NOSIGNAL => true, // sub-second timeouts without SIGALRM
        ];
        if ($this->socket !== null) {
            $options[CURLOPT_UNIX_SOCKET_PATH] = $this->socket;
        }
        if ($body !== null) {
            $headers[] = 'Content-Type: application/json';
            $options[CURLOPT_POSTFIELDS] = json_encode($body, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
        }
        $options[CURLOPT_HTTPHEADER] = $headers;
        curl_setopt_array($ch, $options);

        $request = "$method $path";
        $response = curl_exec($ch);
        if (!is_string($response)) {
            throw new TransportException("wsbridge $request: " . curl_error($ch), curl_errno($ch));
        }
        $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        if ($status < 200 || $status > 299) {
            throw ApiException::from($status, $response, $request);
        }
        $decoded = json_decode($response, true);
        if (!is_array($decoded)) {
            throw new TransportException("wsbridge $request: the answer is not a JSON object");
        }
        return $decoded;
    }
}
