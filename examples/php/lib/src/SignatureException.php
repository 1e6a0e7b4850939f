<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * A webhook whose WsBridge-Signature does not prove it came from wsbridge. The reason code says
 * which check failed, so an app can log it; the answer to the sender should stay a plain 401.
 */
final class SignatureException extends \RuntimeException
{
    public const MALFORMED = 'malformed';
    public const EXPIRED = 'expired';
    public const MISMATCH = 'mismatch';

    public function __construct(public readonly string $reason, string $message)
    {
        parent::__construct($message);
    }
}
