<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * WsBridge-Signature: "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>"
 * (docs/PROTOCOL.md). The MAC covers the timestamp, so a captured webhook cannot be given a new
 * one; the tolerance refuses an old one.
 */
final class Signature
{
    public const HEADER = 'WsBridge-Signature';
    public const DEFAULT_TOLERANCE = 300;

    /** The header value wsbridge would send for $body at $timestamp (for tests and tools). */
    public static function sign(string $secret, string $body, int $timestamp): string
    {
        return 't=' . $timestamp . ',v1=' . hash_hmac('sha256', $timestamp . '.' . $body, $secret);
    }

    /**
     * Returns normally when $header signs $body with $secret and its timestamp is within
     * $tolerance seconds of $now (default: time()), in either direction.
     *
     * @throws SignatureException naming what failed: malformed, expired or mismatch
     */
    public static function verify(string $secret, string $header, string $body, ?int $now = null, int $tolerance = self::DEFAULT_TOLERANCE): void
    {
        if ($secret === '') {
            // An empty key would make every forger's HMAC "valid": refuse to check with it.
            throw new \InvalidArgumentException('empty webhook secret');
        }
        $timestamp = null;
        $signatures = [];
        foreach (explode(',', $header) as $part) {
            [$key, $value] = array_pad(explode('=', trim($part), 2), 2, '');
            if ($key === 't') {
                $timestamp = $value;
            } elseif ($key === 'v1' && $value !== '') {
                // Several v1 entries may appear (key rotation): any one matching is enough.
                $signatures[] = $value;
            }
        }
        if ($timestamp === null || preg_match('/^[0-9]{1,12}$/D', $timestamp) !== 1 || $signatures === []) {
            throw new SignatureException(SignatureException::MALFORMED, 'malformed ' . self::HEADER . ' header');
        }
        $age = ($now ?? time()) - (int) $timestamp;
        if (abs($age) > $tolerance) {
            throw new SignatureException(
                SignatureException::EXPIRED,
                sprintf('signature timestamp is %d s %s, outside the %d s tolerance', abs($age), $age > 0 ? 'old' : 'in the future', $tolerance),
            );
        }
        $expected = hash_hmac('sha256', $timestamp . '.' . $body, $secret);
        foreach ($signatures as $signature) {
            if (hash_equals($expected, $signature)) { // constant time: no timing oracle on the MAC
                return;
            }
        }
        throw new SignatureException(SignatureException::MISMATCH, 'signature does not match the body');
    }
}
