<?php

declare(strict_types=1);

namespace Pusher;

use WsBridge\PusherApiException;
use WsBridge\PusherChannelAuth;
use WsBridge\PusherClient;
use WsBridge\TransportException;

/** What the Pusher SDK throws; Laravel catches ApiErrorException. */
class PusherException extends \Exception
{
}

/** The API answered with a status other than 200 (the code is the status). */
class ApiErrorException extends PusherException
{
}

/**
 * The part of the Pusher SDK's Pusher class (v7) that Laravel's PusherBroadcaster and
 * BroadcastManager call, and the common REST calls, with the SDK's names and arguments, for
 * wsbridge's Pusher HTTP API. Options read: scheme, host, port, useTLS, timeout; cluster, path
 * and encryption options are ignored (wsbridge is one endpoint; it relays encrypted channels'
 * payloads as they are).
 */
class Pusher
{
    private PusherClient $client;
    private ?object $logger = null;

    /** @param array<string, mixed> $options */
    public function __construct(private string $authKey, private string $secret, string $appId, array $options = [])
    {
        $scheme = $options['scheme'] ?? (($options['useTLS'] ?? false) ? 'https' : 'http');
        $host = $options['host'] ?? '127.0.0.1';
        $port = (int) ($options['port'] ?? ($scheme === 'https' ? 443 : 80));
        $this->client = new PusherClient($appId, $authKey, $secret, "$scheme://$host:$port", (float) ($options['timeout'] ?? 30));
    }

    /** Laravel calls it with the 'log' option; only the object is kept. */
    public function setLogger(object $logger): void
    {
        $this->logger = $logger;
    }

    /**
     * @param string|list<string> $channels
     * @param array<string, mixed> $params socket_id, info
     * @return object {} or {"channels": ...}, as the SDK returns it
     * @throws ApiErrorException|PusherException
     */
    public function trigger($channels, string $event, $data, array $params = [], bool $alreadyEncoded = false): object
    {
        $payload = $alreadyEncoded && is_string($data) ? $data : (is_string($data) ? $data : json_encode($data, JSON_THROW_ON_ERROR));
        $info = isset($params['info']) ? explode(',', (string) $params['info']) : [];
        return $this->wrap(fn () => $this->client->trigger((array) $channels, $event, $payload, $params['socket_id'] ?? null, $info));
    }

    /**
     * @param list<array<string, mixed>> $batch
     * @throws ApiErrorException|PusherException
     */
    public function triggerBatch(array $batch = [], bool $alreadyEncoded = false): object
    {
        return $this->wrap(fn () => $this->client->triggerBatch($batch));
    }

    /** @param array<string, mixed> $params filter_by_prefix, info */
    public function getChannels(array $params = []): object
    {
        $info = isset($params['info']) ? explode(',', (string) $params['info']) : [];
        return $this->wrap(fn () => ['channels' => $this->client->getChannels($params['filter_by_prefix'] ?? null, $info)]);
    }

    /** @param array<string, mixed> $params info */
    public function getChannelInfo(string $channel, array $params = []): object
    {
        $info = isset($params['info']) ? explode(',', (string) $params['info']) : [];
        return $this->wrap(fn () => $this->client->getChannelInfo($channel, $info));
    }

    public function getPresenceUsers(string $channel): object
    {
        return $this->wrap(fn () => ['users' => array_map(fn ($id) => ['id' => $id], $this->client->getPresenceUsers($channel))]);
    }

    public function terminateUserConnections(string $userId): object
    {
        return $this->wrap(function () use ($userId) {
            $this->client->terminateUserConnections($userId);
            return [];
        });
    }

    /**
     * The private channel authorisation pusher-js expects, {"auth": "key:signature"}, signed by the
     * kit's PusherChannelAuth. The SDK's $customData is only ever a presence channel_data: use
     * authorizePresenceChannel for those.
     */
    public function authorizeChannel(string $channel, string $socketId, ?string $customData = null): string
    {
        if ($customData !== null) {
            throw new PusherException('custom channel data is for presence channels: use authorizePresenceChannel');
        }
        return $this->auth(fn (PusherChannelAuth $a) => $a->authorizePrivate($socketId, $channel));
    }

    /** The presence channel authorisation, with channel_data {"user_id", "user_info"}. */
    public function authorizePresenceChannel(string $channel, string $socketId, string $userId, $userInfo = null): string
    {
        if ($userInfo !== null && !is_array($userInfo)) {
            throw new PusherException('user_info must be an array');
        }
        return $this->auth(fn (PusherChannelAuth $a) => $a->authorizePresence($socketId, $channel, $userId, $userInfo));
    }

    /** @param callable(PusherChannelAuth): array<string, string> $sign */
    private function auth(callable $sign): string
    {
        try {
            return json_encode($sign(new PusherChannelAuth($this->authKey, $this->secret)), JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES);
        } catch (\InvalidArgumentException $e) {
            throw new PusherException($e->getMessage(), 0, $e); // as the SDK, for a bad socket id
        }
    }

    /** The SDK's older names, which Laravel 8 calls. */
    public function socket_auth(string $channel, string $socketId, ?string $customData = null): string
    {
        return $this->authorizeChannel($channel, $socketId, $customData);
    }

    /** As the SDK's presence_auth, an integer user id stays a JSON number in channel_data. */
    public function presence_auth(string $channel, string $socketId, string|int $userId, $userInfo = null): string
    {
        if ($userInfo !== null && !is_array($userInfo)) {
            throw new PusherException('user_info must be an array');
        }
        return $this->auth(fn (PusherChannelAuth $a) => $a->authorizePresence($socketId, $channel, $userId, $userInfo));
    }

    /** Runs a call and turns the kit's exceptions into the SDK's, and its arrays into objects. */
    private function wrap(callable $call): object
    {
        try {
            $result = $call();
            // The SDK decodes answers into objects ({} too), and lists into arrays.
            return json_decode(json_encode($result === [] ? new \stdClass() : $result, JSON_THROW_ON_ERROR), false, 512, JSON_THROW_ON_ERROR);
        } catch (PusherApiException $e) {
            throw new ApiErrorException($e->getMessage(), $e->status, $e);
        } catch (TransportException $e) {
            throw new PusherException($e->getMessage(), $e->getCode(), $e);
        }
    }
}
