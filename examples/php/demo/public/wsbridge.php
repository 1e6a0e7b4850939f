<?php

declare(strict_types=1);

/*
 * Shared helpers for the wsbridge demo: webhook signature checks, the internal push API, and
 * JSON replies. Plain functions so any script can `require __DIR__ . '/wsbridge.php';`.
 *
 * This file lives in the document root only to keep the demo small; requested directly it
 * defines the functions and outputs nothing. In a real app keep it outside the web root.
 */

/** Flags for every JSON we produce: fail loudly, and keep URLs and non-ASCII text readable. */
const WSBRIDGE_JSON_FLAGS = JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE;

/**
 * Checks a WsBridge-Signature header ("t=<unix seconds>,v1=<hex HMAC-SHA256>") against the raw
 * request body. The MAC covers "<t>.<body>", so a captured request cannot be replayed with a new
 * timestamp, and an old one is refused once it is more than $tolerance seconds away from now.
 */
function wsbridge_verify(string $body, string $header, string $secret, int $tolerance = 300): bool
{
    if ($secret === '' || $header === '') {
        return false;
    }

    $timestamp = null;
    $signatures = [];
    foreach (explode(',', $header) as $part) {
        [$key, $value] = array_pad(explode('=', trim($part), 2), 2, '');
        if ($key === 't' && ctype_digit($value)) {
            $timestamp = $value;
        } elseif ($key === 'v1' && $value !== '') {
            // Several v1 entries are accepted, so a secret can be rotated without downtime.
            $signatures[] = strtolower($value);
        }
    }
    if ($timestamp === null || $signatures === [] || abs(time() - (int) $timestamp) > $tolerance) {
        return false;
    }

    $expected = hash_hmac('sha256', $timestamp . '.' . $body, $secret);
    foreach ($signatures as $signature) {
        if (hash_equals($expected, $signature)) { // constant time: no timing oracle on the MAC
            return true;
        }
    }
    return false;
}

/**
 * Calls wsbridge's internal push API and returns the decoded JSON answer ([] for an empty one).
 *
 * @param array<string, mixed>|null $body sent as JSON when not null
 * @return array<mixed>
 * @throws RuntimeException when the API is unreachable or answers with a non-2xx status
 */
function wsbridge_api(string $method, string $path, ?array $body = null): array
{
    $base = getenv('WSBRIDGE_API');
    $base = rtrim($base === false || $base === '' ? 'http://127.0.0.1:8081' : $base, '/');

    $headers = ['Accept: application/json'];
    $token = getenv('WSBRIDGE_API_TOKEN');
    if ($token !== false && $token !== '') {
        $headers[] = 'Authorization: Bearer ' . $token;
    }

    $ch = curl_init($base . $path);
    $options = [
        CURLOPT_CUSTOMREQUEST => strtoupper($method),
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_CONNECTTIMEOUT_MS => 2000,
        CURLOPT_TIMEOUT_MS => 2000, // the caller may be a webhook the bridge is waiting on
        CURLOPT_FOLLOWLOCATION => false,
    ];
    if ($body !== null) {
        $options[CURLOPT_POSTFIELDS] = json_encode($body, WSBRIDGE_JSON_FLAGS);
        $headers[] = 'Content-Type: application/json';
    }
    $options[CURLOPT_HTTPHEADER] = $headers;
    curl_setopt_array($ch, $options);

    $response = curl_exec($ch);
    if ($response === false) {
        $error = curl_error($ch);
        curl_close($ch);
        throw new RuntimeException("wsbridge API $method $path: $error");
    }
    $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    curl_close($ch);

    $decoded = trim($response) === '' ? [] : json_decode($response, true);
    if ($status < 200 || $status > 299) {
        // Errors look like {"error": "...", "detail": "..."}; fall back to the raw body.
        $message = is_array($decoded)
            ? implode(': ', array_filter(
                [$decoded['error'] ?? null, $decoded['detail'] ?? null],
                static fn ($s) => is_string($s) && $s !== '',
            ))
            : '';
        if ($message === '') {
            $message = substr(trim($response), 0, 200);
        }
        throw new RuntimeException("wsbridge API $method $path: HTTP $status: $message", $status);
    }
    if (!is_array($decoded)) {
        throw new RuntimeException("wsbridge API $method $path: answer is not a JSON object");
    }
    return $decoded;
}

/** Encodes a value as JSON with the demo's flags, e.g. for a publication's "data" string. */
function wsbridge_json(mixed $value): string
{
    return json_encode($value, WSBRIDGE_JSON_FLAGS);
}

/**
 * Sends a webhook reply and ends the request. Only the fields of the protocol may appear:
 * wsbridge refuses a whole reply that has an unknown field. An empty array becomes a 204.
 *
 * @param array<string, mixed> $reply
 */
function wsbridge_reply(array $reply): never
{
    if ($reply === []) {
        // "[]" is not a JSON object; an empty 204 is the protocol's "nothing to do".
        http_response_code(204);
        exit;
    }
    header('Content-Type: application/json');
    echo json_encode($reply, WSBRIDGE_JSON_FLAGS);
    exit;
}
