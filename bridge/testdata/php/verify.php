<?php
// Signature check as a PHP app does it: HMAC-SHA256 over "<t>.<raw body>", compared with
// hash_equals (constant time), refused outside a timestamp tolerance so a captured webhook
// cannot be replayed later.
declare(strict_types=1);

function wsbridge_verify(string $secret, string $header, string $body, int $now, int $tolerance = 300): ?string
{
    $t = null;
    $sigs = [];
    foreach (explode(',', $header) as $part) {
        [$k, $v] = array_pad(explode('=', trim($part), 2), 2, null);
        if ($k === 't') {
            $t = $v;
        } elseif ($k === 'v1' && $v !== null) {
            $sigs[] = $v;
        }
    }
    if ($t === null || !ctype_digit($t) || $sigs === []) {
        return 'malformed signature header';
    }
    if (abs($now - (int) $t) > $tolerance) {
        return 'signature timestamp outside tolerance';
    }
    $want = hash_hmac('sha256', $t . '.' . $body, $secret);
    foreach ($sigs as $sig) {
        if (hash_equals($want, $sig)) {
            return null;
        }
    }
    return 'signature mismatch';
}
