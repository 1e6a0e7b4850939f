<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * The Pusher HTTP API of wsbridge (WSBRIDGE_PUSHER_APP_ID / _KEY / _SECRET; docs/pusher.md), on
 * curl, signed as the official Pusher PHP SDK signs (PusherSignature). It is what that SDK does
 * for the calls an app makes, without Composer:
 *
 *     $pusher = new PusherClient('app-id', 'app-key', 'app-secret', 'http://127.0.0.1:8081');
 *     $pusher->trigger(['orders'], 'order.shipped', ['id' => 7], $socketIdToExclude);
 *
 * Errors are exceptions: TransportException (unreachable, timeout) or PusherApiException
 * (any status but 200, with the API's explanation).
 */
final class PusherClient
{
    private readonly string $base;
    private ?\CurlHandle $curl = null;

    public function __construct(
        private readonly string $appId,
        private readonly string $key,
        private readonly string $secret,
        /** http(s)://host:port of wsbridge's internal listener (WSBRIDGE_INTERNAL_LISTEN). */
        string $endpoint = 'http://127.0.0.1:8081',
        private readonly float $timeout = 2.0,
        private readonly float $connectTimeout = 1.0,
        /** @var (\Closure(): int)|null the Unix time requests are signed with; time() when null */
        private readonly ?\Closure $clock = null,
    ) {
        if (preg_match('~^https?://~', $endpoint) !== 1) {
            throw new \InvalidArgumentException("endpoint must be http(s)://host:port, got \"$endpoint\"");
        }
        $this->base = rtrim($endpoint, '/');
    }

    /**
     * Sends an event to one or more channels (at most 100); $data that is not a string is sent
     * as its JSON, as the SDK does. $socketId (a browser's, e.g. Laravel's X-Socket-ID) is left
     * out. $info (user_count, subscription_count) asks for the channels' counts.
     *
     * @param string|list<string> $channels
     * @param list<string> $info
     * @return array<string, mixed> {} or {"channels": {name: {counts}}}
     */
    public function trigger(string|array $channels, string $event, mixed $data, ?string $socketId = null, array $info = []): array
    {
        $body = ['name' => $event, 'data' => is_string($data) ? $data : json_encode($data, JSON_THROW_ON_ERROR), 'channels' => array_values((array) $channels)];
        if ($socketId !== null) {
            $body['socket_id'] = $socketId;
        }
        if ($info !== []) {
            $body['info'] = implode(',', $info);
        }
        return $this->call('POST', '/events', [], $body);
    }

    /**
     * Sends up to 10 events in one request, all or none: each is
     * ['channel' => ..., 'name' => ..., 'data' => ..., 'socket_id' => ... (optional)].
     *
     * @param list<array<string, mixed>> $batch
     * @return array<string, mixed>
     */
    public function triggerBatch(array $batch): array
    {
        foreach ($batch as &$e) {
            if (isset($e['data']) && !is_string($e['data'])) {
                $e['data'] = json_encode($e['data'], JSON_THROW_ON_ERROR);
            }
        }
        unset($e);
        return $this->call('POST', '/batch_events', [], ['batch' => $batch]);
    }

    /**
     * The occupied channels, optionally those starting with $prefix; user_count in $info only
     * with a presence- prefix.
     *
     * @param list<string> $info
     * @return array<string, array<string, int>> name => attributes
     */
    public function getChannels(?string $prefix = null, array $info = []): array
    {
        $q = [];
        if ($prefix !== null) {
            $q['filter_by_prefix'] = $prefix;
        }
        if ($info !== []) {
            $q['info'] = implode(',', $info);
        }
        return $this->call('GET', '/channels', $q)['channels'];
    }

    /**
     * @param list<string> $info user_count (presence channels), subscription_count
     * @return array<string, mixed> occupied, and the counts asked for
     */
    public function getChannelInfo(string $channel, array $info = []): array
    {
        return $this->call('GET', '/channels/' . $channel, $info === [] ? [] : ['info' => implode(',', $info)]);
    }

    /** @return list<string> the user ids of a presence channel */
    public function getPresenceUsers(string $channel): array
    {
        return array_column($this->call('GET', '/channels/' . $channel . '/users')['users'], 'id');
    }

    /** Closes every connection of a user (close code 4009: pusher-js does not reconnect). */
    public function terminateUserConnections(string $userId): void
    {
        $this->call('POST', '/users/' . $userId . '/terminate_connections', [], new \stdClass());
    }

    /**
     * @param array<string, string> $query
     * @return array<string, mixed>
     */
    private function call(string $method, string $subPath, array $query = [], array|\stdClass|null $body = null): array
    {
        $path = '/apps/' . $this->appId . $subPath;
        $json = $body === null ? '' : json_encode($body, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
        $signed = PusherSignature::sign($this->key, $this->secret, $method, $path, $query, $json, $this->clock === null ? null : ($this->clock)());
        $ch = $this->curl ??= curl_init();
        curl_reset($ch);
        $headers = ['Accept: application/json'];
        $options = [
            CURLOPT_URL => $this->base . $path . '?' . http_build_query($signed, '', '&', PHP_QUERY_RFC3986),
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_CONNECTTIMEOUT_MS => (int) ($this->connectTimeout * 1000),
            CURLOPT_TIMEOUT_MS => (int) ($this->timeout * 1000),
            CURLOPT_NOSIGNAL => true,
        ];
        if ($json !== '') {
            $headers[] = 'Content-Type: application/json';
            $options[CURLOPT_POSTFIELDS] = $json;
        }
        $options[CURLOPT_HTTPHEADER] = $headers;
        curl_setopt_array($ch, $options);

        $request = "$method $path";
        $response = curl_exec($ch);
        if (!is_string($response)) {
            throw new TransportException("wsbridge Pusher API $request: " . curl_error($ch), curl_errno($ch));
        }
        $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        if ($status !== 200) {
            throw new PusherApiException($status, $response, $request);
        }
        $decoded = json_decode($response, true);
        if (!is_array($decoded)) {
            throw new TransportException("wsbridge Pusher API $request: the answer is not a JSON object");
        }
        return $decoded;
    }
}
