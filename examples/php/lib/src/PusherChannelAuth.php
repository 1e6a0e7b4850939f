<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * The answer of a Pusher channel authorisation endpoint (Laravel's /broadcasting/auth), signed as
 * Pusher and Laravel's pusher broadcaster sign it, for wsbridge's Pusher mode (docs/PROTOCOL.md,
 * "Pusher protocol"). wsbridge checks the signature in constant time when the client subscribes.
 *
 *   private-, private-encrypted-: auth = "<key>:" . hex HMAC-SHA256(secret, "<socket_id>:<channel>")
 *   presence-: channel_data = JSON {"user_id", "user_info"}, and the HMAC covers
 *              "<socket_id>:<channel>:<channel_data>" byte for byte
 */
final class PusherChannelAuth
{
    public function __construct(private readonly string $key, private readonly string $secret)
    {
        if ($key === '' || $secret === '') {
            throw new \InvalidArgumentException('the Pusher key and secret must not be empty');
        }
    }

    /** @return array{auth: string} for a private- channel */
    public function authorizePrivate(string $socketId, string $channel): array
    {
        self::check($socketId, $channel);
        return ['auth' => $this->sign($socketId . ':' . $channel)];
    }

    /**
     * @param array<string, mixed>|null $userInfo
     * @return array{auth: string, channel_data: string} for a presence- channel
     */
    public function authorizePresence(string $socketId, string $channel, string|int $userId, ?array $userInfo = null): array
    {
        self::check($socketId, $channel);
        $data = ['user_id' => $userId];
        if ($userInfo !== null) {
            $data['user_info'] = $userInfo;
        }
        $channelData = json_encode($data, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
        return ['auth' => $this->sign($socketId . ':' . $channel . ':' . $channelData), 'channel_data' => $channelData];
    }

    private function sign(string $payload): string
    {
        return $this->key . ':' . hash_hmac('sha256', $payload, $this->secret);
    }

    /** The shapes the Pusher server SDKs accept: a socket id \d+\.\d+ and Pusher's channel names. */
    private static function check(string $socketId, string $channel): void
    {
        if (preg_match('/\A\d+\.\d+\z/', $socketId) !== 1) {
            throw new \InvalidArgumentException('invalid socket_id ' . json_encode($socketId));
        }
        if (preg_match('/\A[-a-zA-Z0-9_=@,.;]+\z/', $channel) !== 1) {
            throw new \InvalidArgumentException('invalid channel name ' . json_encode($channel));
        }
    }
}
