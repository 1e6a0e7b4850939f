<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * Pusher request signing (auth_version 1.0) and Pusher webhook signatures, exactly as the
 * official Pusher server SDKs compute them, for wsbridge's Pusher HTTP API (/apps/{app_id}/ on
 * the internal listener, docs/pusher.md) and its Pusher-format webhooks.
 *
 *     $query = PusherSignature::sign($key, $secret, 'POST', '/apps/1/events', [], $body);
 *     // POST http://127.0.0.1:8081/apps/1/events?{http_build_query($query)} with $body
 */
final class PusherSignature
{
    /**
     * The query parameters of a signed request: $params plus auth_key, auth_timestamp,
     * auth_version, body_md5 (when there is a body) and auth_signature, the hex HMAC-SHA256 of
     * "METHOD\nPATH\n" and the other parameters sorted by key, joined as key=value with "&",
     * values not URL-escaped. wsbridge refuses a timestamp more than 600 s from its clock.
     *
     * @param array<string, string|int> $params other query parameters (info, filter_by_prefix)
     * @return array<string, string>
     */
    public static function sign(string $key, string $secret, string $method, string $path, array $params = [], string $body = '', ?int $timestamp = null): array
    {
        $params = array_change_key_case(array_map('strval', $params), CASE_LOWER);
        $params['auth_key'] = $key;
        $params['auth_timestamp'] = (string) ($timestamp ?? time());
        $params['auth_version'] = '1.0';
        if ($body !== '') {
            $params['body_md5'] = md5($body);
        }
        unset($params['auth_signature']);
        ksort($params, SORT_STRING);
        $params['auth_signature'] = hash_hmac('sha256', self::stringToSign($method, $path, $params), $secret);
        return $params;
    }

    /** @param array<string, string> $params without auth_signature, sorted by key */
    public static function stringToSign(string $method, string $path, array $params): string
    {
        $pairs = [];
        foreach ($params as $k => $v) {
            $pairs[] = $k . '=' . $v;
        }
        return strtoupper($method) . "\n" . $path . "\n" . implode('&', $pairs);
    }

    /**
     * Checks a Pusher-format webhook (WSBRIDGE_PUSHER_WEBHOOK_URL): X-Pusher-Key is the app key
     * and X-Pusher-Signature the hex HMAC-SHA256 of the raw body, compared in constant time.
     * Returns the decoded body: ['time_ms' => int, 'events' => list<array<string, string>>].
     *
     * @return array{time_ms: int, events: list<array<string, string>>}
     * @throws SignatureException
     */
    public static function verifyWebhook(string $key, string $secret, ?string $headerKey, ?string $headerSignature, string $body): array
    {
        if ($headerKey === null || !hash_equals($key, $headerKey)) {
            throw new SignatureException(SignatureException::MISMATCH, 'X-Pusher-Key is not this app\'s key');
        }
        if ($headerSignature === null || !hash_equals(hash_hmac('sha256', $body, $secret), strtolower($headerSignature))) {
            throw new SignatureException(SignatureException::MISMATCH, 'X-Pusher-Signature does not match the body');
        }
        $d = json_decode($body, true);
        if (!is_array($d) || !is_int($d['time_ms'] ?? null) || !is_array($d['events'] ?? null)) {
            throw new SignatureException(SignatureException::MALFORMED, 'the Pusher webhook body is not {"time_ms", "events"}');
        }
        return $d;
    }
}
